"""A researcher builds, previews and opens a study in the console alone, and a participant answers it; prompt sets
upload from the browser; a run's progress, warnings and adapters show in the console."""

import re
from datetime import timedelta
from pathlib import Path

import pytest
from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.contenttypes.models import ContentType
from django.test import Client
from django.utils import timezone
from PIL import Image

from generation.models import PromptSet
from peftlab.models import Job
from studies.models import Participant, Study
from trainer.models import TrainingRun

SHOTS = Path("/work/notes/shots")
pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


def shot(page, name: str) -> None:
    """Save a full-page screenshot for a person to look at, where the notes folder exists."""
    if SHOTS.is_dir():
        page.screenshot(path=str(SHOTS / f"console-{name}.png"), full_page=True)


def staff_context(browser, live_server):
    """A browser context logged in as a staff researcher (the session cookie of a forced login)."""
    user = get_user_model().objects.create_user("researcher", password="pw-for-tests", is_staff=True)
    client = Client()
    client.force_login(user)
    context = browser.new_context(viewport={"width": 1200, "height": 900})
    cookie = client.cookies[settings.SESSION_COOKIE_NAME].value
    context.add_cookies([{"name": settings.SESSION_COOKIE_NAME, "value": cookie, "url": live_server.url}])
    return context


def test_a_study_is_built_previewed_opened_and_answered_from_the_console(browser, live_server, run):
    console = staff_context(browser, live_server).new_page()
    console.goto(f"{live_server.url}/console/studies/new/")
    console.get_by_label("Generation run").select_option(str(run.pk))
    console.get_by_role("button", name="Next").click()
    console.get_by_label("Slug").fill("console-built")
    console.get_by_label("Display name of lora").fill("LoRA (rank 8)")
    console.get_by_label("Display name of ti").fill("Textual Inversion")
    console.get_by_label("Which image better preserves the identity").uncheck()
    console.get_by_label("Custom question 1: wording").fill("Which image looks more finished?")
    console.get_by_label("Custom question 1: key").fill("finish")
    console.get_by_label("Custom question 1: display name").fill("Finish")
    console.get_by_label("Attention checks:", exact=True).fill("1")
    console.get_by_label("Max participants").fill("10")
    console.get_by_label("Completion code").fill("CONSOLE42")
    shot(console, "builder")
    console.get_by_role("button", name="Create the study").click()
    console.wait_for_selector("text=created as a draft")
    study = Study.objects.get(slug="console-built")
    assert study.arm_labels == {"lora": "LoRA (rank 8)", "ti": "Textual Inversion"}
    assert list(study.questions.values_list("key", flat=True)) == ["artwork", "style", "finish"]
    assert study.max_participants == 10 and study.status == Study.Status.DRAFT

    # The preview walks the draft's pages as a participant sees them, and records nothing.
    with console.context.expect_page() as opened:
        console.get_by_role("link", name="Preview as a participant").click()
    preview = opened.value
    preview.wait_for_selector("text=Staff preview")
    preview.click("#preview-next")  # instructions
    preview.click("#preview-next")  # the first pair
    preview.wait_for_selector('img[alt="Image on the left"]')
    shot(preview, "preview")
    preview.close()
    assert not Participant.objects.exists()
    assert (
        "I agree" not in Client().get(f"/studies/{study.slug}/").content.decode()
    )  # a stranger: not open yet

    console.get_by_role("button", name="Lock the analysis plan").click()
    console.wait_for_selector("text=Analysis plan locked")
    study.refresh_from_db()
    assert study.plan_sha256 in console.inner_text("#plan-status")

    console.get_by_role("button", name="Open the study").click()
    console.wait_for_selector("text=Study console-built is open.")
    shot(console, "study")
    study.refresh_from_db()
    assert study.status == Study.Status.OPEN

    participant = browser.new_context().new_page()
    participant.goto(f"{live_server.url}/studies/console-built/?PROLIFIC_PID=p1&STUDY_ID=s&SESSION_ID=x")
    participant.get_by_role("button", name="I agree, start the study").click()
    participant.get_by_role("button", name="Start").click()
    pages = 2 * 3 * 3 + 1  # prompts x arm pairs x questions + one attention check
    for number in range(1, pages + 1):
        participant.wait_for_selector(f"text=Page {number} of {pages}")
        check = re.search(r"choose the image on the (left|right)", participant.content())
        side = check.group(1) if check else "left"
        if number == 3:
            shot(participant, "participant")
        participant.get_by_role("button", name=f"Image on the {side}").click()
    participant.get_by_role("button", name="Finish").click()
    participant.wait_for_selector("#completion-code")
    assert participant.inner_text("#completion-code") == "CONSOLE42"
    assert Participant.objects.get().responses.count() == pages

    console.get_by_role("button", name="Close the study").click()
    console.wait_for_selector("text=Study console-built is closed.")
    study.refresh_from_db()
    assert study.status == Study.Status.CLOSED

    # The report, from the study page: the forest plot first, then the paragraphs, in display names.
    console.get_by_role("link", name="analysis report").click()
    console.wait_for_selector("#forest-plot img")
    body = console.content()
    assert body.index('id="forest-plot"') < body.index('id="results"') < body.index('id="methods"')
    methods = console.inner_text("#methods")
    assert "LoRA (rank 8)" in methods and "Textual Inversion" in methods and "Holm" in methods
    assert f"preregistered (sha256 {study.plan_sha256[:12]}" in methods
    assert "1 took part" in console.inner_text("#exclusions")
    shot(console, "report")


def test_a_prompt_set_is_uploaded_and_a_runs_warnings_progress_and_adapters_are_shown(
    browser, live_server, tmp_path
):
    console = staff_context(browser, live_server).new_page()
    console.goto(f"{live_server.url}/console/prompts/")
    prompts = tmp_path / "towers.csv"
    prompts.write_text("landmark,text,reference_images\nEiffel Tower,the Eiffel Tower at dusk,eiffel.png\n")
    Image.new("RGB", (32, 32), (200, 120, 40)).save(tmp_path / "eiffel.png")
    console.get_by_label("File").set_input_files(str(prompts))
    console.get_by_label("Reference images").set_input_files([str(tmp_path / "eiffel.png")])
    console.get_by_role("button", name="Upload").click()
    console.wait_for_selector("text=Prompt set towers: 1 prompt loaded.")
    assert PromptSet.objects.get(name="towers").prompts.get().reference_images[0].startswith("references/")

    output = tmp_path / "run"
    output.mkdir()
    for name in ("pytorch_lora_weights.safetensors", "lora_kohya.safetensors", "run.json"):
        (output / name).write_bytes(b"{}")
    run = TrainingRun.objects.create(
        method="lora",
        status="running",
        dataset_path=str(tmp_path / "dataset"),
        output_path=str(output),
        config={"epochs": 40},
        warnings=[
            "training at 512 px on a dataset prepared at 64 px: every image is upscaled 8x, which adds no detail "
            "and makes each step slower; train at --resolution 64, or prepare the dataset at 512 px.",
            "12 of 12 captions are longer than 75 tokens and lose their tail (--max-caption-tokens 77); train "
            "with --max-caption-tokens 150 to keep them whole.",
        ],
    )
    Job.objects.create(
        kind=Job.Kind.TRAINING,
        func_path="trainer.jobs.training_run_job",
        content_type=ContentType.objects.get_for_model(TrainingRun),
        object_id=run.pk,
        status="running",
        percent=100 * 19 / 40,
        stage="epoch 20/40",
        done=0,
        total=4,
        eta_at=timezone.now() + timedelta(minutes=7, seconds=30),
    )
    console.goto(f"{live_server.url}/console/")
    console.wait_for_selector("text=⚠ 2 warnings")
    assert "48%" in console.inner_text(f'tr[data-run="training-{run.pk}"]')
    shot(console, "runs")
    TrainingRun.objects.filter(pk=run.pk).update(status="finished", files={
        name: str(output / name) for name in ("pytorch_lora_weights.safetensors", "lora_kohya.safetensors", "run.json")
    })  # fmt: skip
    console.goto(f"{live_server.url}/console/runs/training/{run.pk}/")
    console.wait_for_selector("text=every image is upscaled 8x")
    with console.expect_download() as download:
        console.click("#adapters-zip")
    assert download.value.suggested_filename == f"training-run-{run.pk}-lora-adapters.zip"
    shot(console, "run")
