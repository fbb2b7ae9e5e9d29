"""Stimuli are checked before a study opens: load_prompts copies references, opening refuses unreadable files,
and a file lost later is a 404 and a log line, never a 500."""

import io
import json
import logging
import re
from pathlib import Path

import pytest
from django.contrib.auth.models import User
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.core.management import CommandError, call_command
from django.test import Client
from PIL import Image

from generation.models import GeneratedImage, GenerationRun, PromptSet
from studies.models import Study
from studies.services import study_create_from_generation, study_status_set, study_stimuli_check

from .conftest import COLORS, Bot, png_bytes

pytestmark = pytest.mark.django_db


def jpeg_bytes(color: tuple[int, int, int]) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (24, 24), color).save(buffer, format="JPEG")
    return buffer.getvalue()


def prompt_file(folder: Path, references: list[str]) -> Path:
    """A JSON prompt file in `folder` whose one prompt names `references` as written."""
    path = folder / "bridges.json"
    path.write_text(json.dumps({"prompts": [{"landmark": "Anzac Bridge", "text": "a bridge", "reference_images": references}]}))
    return path


def run_over(prompt_set: PromptSet) -> GenerationRun:
    """A finished run with one image per arm of each prompt of `prompt_set`."""
    run = GenerationRun.objects.create(name="r", status="finished", prompt_set=prompt_set, arms=["lora", "ti"])
    for prompt in prompt_set.prompts.all():
        for arm in run.arms:
            image = GeneratedImage(run=run, arm=arm, prompt=prompt, seed=0, rendered_prompt="t", sha256="0" * 64)
            image.image.save("x.png", ContentFile(png_bytes(COLORS[arm], arm)), save=False)
            image.width = image.height = 16
            image.save()
    return run


def test_load_prompts_copies_references_named_relative_to_the_file_and_participants_see_them(tmp_path):
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "anzac-bridge_ghibli_01.jpg").write_bytes(jpeg_bytes((10, 120, 200)))
    absolute = tmp_path / "elsewhere.jpg"
    absolute.write_bytes(jpeg_bytes((200, 120, 10)))
    call_command("load_prompts", str(prompt_file(tmp_path, ["src/anzac-bridge_ghibli_01.jpg", str(absolute)])))
    prompt = PromptSet.objects.get().prompts.get()
    # Copied into media storage as clean PNGs under opaque names: the originals may move or vanish.
    assert len(prompt.reference_images) == 2
    assert all(name.startswith("references/") and "anzac" not in name for name in prompt.reference_images)
    (tmp_path / "src" / "anzac-bridge_ghibli_01.jpg").unlink()
    absolute.unlink()
    study = study_create_from_generation(run=run_over(prompt.prompt_set), slug="refs", status=Study.Status.OPEN)
    bot = Bot(study, "PROLIFIC_PID=refs1")
    bot.consent()
    while not (references := re.findall(r'<img src="([^"]+)" alt="Reference image', bot.current()[0])):
        bot.answer()
    assert len(references) == 2
    served = [bot.client.get(src) for src in references]
    assert [response.status_code for response in served] == [200, 200]
    colours = {Image.open(io.BytesIO(response.content)).convert("RGB").getpixel((12, 12)) for response in served}
    assert len(colours) == 2  # both images, each its own


def test_load_prompts_reads_csv_references_relative_to_the_csv(tmp_path):
    (tmp_path / "refs").mkdir()
    for name, colour in (("a.jpg", (5, 5, 5)), ("b.jpg", (250, 5, 5))):
        (tmp_path / "refs" / name).write_bytes(jpeg_bytes(colour))
    path = tmp_path / "mine.csv"
    path.write_text("landmark,text,reference_images\nTaj Mahal,the taj mahal,refs/a.jpg; refs/b.jpg\n")
    call_command("load_prompts", str(path))
    references = PromptSet.objects.get().prompts.get().reference_images
    assert len(references) == 2 and all(default_storage.exists(name) for name in references)


@pytest.mark.parametrize(
    "reference, message",
    [
        ("/does/not/exist.jpg", r"bridges.json prompt 1: reference image '/does/not/exist.jpg' does not exist"),
        ("src/missing.jpg", r"reference image 'src/missing.jpg' does not exist \(.*/src/missing.jpg\)"),
        ("notes.txt", r"reference image .*notes.txt is not a readable image"),
    ],
)
def test_load_prompts_refuses_a_missing_or_unreadable_reference_in_one_line(tmp_path, reference, message):
    (tmp_path / "notes.txt").write_text("not a picture")
    (tmp_path / "good.jpg").write_bytes(jpeg_bytes((1, 2, 3)))
    with pytest.raises(CommandError, match=message) as error:
        call_command("load_prompts", str(prompt_file(tmp_path, ["good.jpg", reference])))
    assert "\n" not in str(error.value)
    # Nothing half-written: no set, and not even the good reference was stored.
    assert not PromptSet.objects.exists()
    assert not default_storage.exists("references") or not default_storage.listdir("references")[1]


def test_opening_a_study_with_a_missing_stimulus_is_refused_in_one_line(run):
    lost = GeneratedImage.objects.filter(arm="lora").first()
    default_storage.delete(lost.image.name)
    with pytest.raises(CommandError, match=rf"cannot open: the lora image of '{lost.prompt.landmark}' \("):
        call_command("create_study", "--from-generation", run.pk, "--slug", "lost", "--open")
    assert not Study.objects.exists()  # the whole study was rolled back
    call_command("create_study", "--from-generation", run.pk, "--slug", "lost")  # a draft may be fixed first
    study = Study.objects.get()
    with pytest.raises(Exception, match="cannot open"):
        study_status_set(study=study, status=Study.Status.OPEN)
    study.refresh_from_db()
    assert study.status == Study.Status.DRAFT
    default_storage.save(lost.image.name, ContentFile(png_bytes(COLORS["lora"], "restored")))
    study_status_set(study=study, status=Study.Status.OPEN)
    assert Study.objects.get().status == Study.Status.OPEN


def test_a_missing_reference_blocks_opening_only_when_a_question_shows_references(run):
    prompt = run.prompt_set.prompts.first()
    default_storage.delete(prompt.reference_images[1])
    plain = study_create_from_generation(
        run=run, questions=[{"key": "nicer", "text": "Which?"}], slug="plain", status=Study.Status.OPEN
    )
    assert plain.status == Study.Status.OPEN
    with pytest.raises(Exception, match=rf"cannot open: a reference image of '{prompt.landmark}'"):
        study_create_from_generation(run=run, slug="with-refs", status=Study.Status.OPEN)


def test_a_corrupt_stimulus_is_refused_and_the_count_of_bad_files_is_given(run):
    study = study_create_from_generation(run=run, slug="corrupt")
    for image in GeneratedImage.objects.filter(arm="ti"):
        with default_storage.open(image.image.name, "wb") as handle:
            handle.write(b"\x89PNG\r\n\x1a\n truncated")
    with pytest.raises(Exception, match=r"cannot be read: not an image \(and 1 more\)"):
        study_stimuli_check(study=study)


def _staff_client() -> Client:
    client = Client()
    client.force_login(User.objects.create_superuser("admin", "a@example.org", "pw"))
    return client


def test_the_admin_refuses_to_open_a_study_with_a_missing_stimulus(run):
    study = study_create_from_generation(run=run, slug="admin-lost")
    default_storage.delete(GeneratedImage.objects.filter(arm="ti").first().image.name)
    client = _staff_client()
    response = client.post(
        "/admin/studies/study/",
        {"action": "open_studies", "_selected_action": [study.pk]},
        follow=True,
    )
    assert b"cannot open: the ti image of" in response.content
    study.refresh_from_db()
    assert study.status == Study.Status.DRAFT
    change = client.get(f"/admin/studies/study/{study.pk}/change/")
    fields = change.context["adminform"].form.fields
    form = {
        key: "" if value is None else json.dumps(value) if isinstance(value, dict | list) else value
        for key, value in change.context["adminform"].form.initial.items()
        if key in fields
    }
    form.update(
        status="open",
        generation_run=run.pk,
        **{
            f"{prefix}-{field}": "0"
            for prefix in ("questions", "trials")
            for field in ("TOTAL_FORMS", "INITIAL_FORMS")
        },
    )
    response = client.post(f"/admin/studies/study/{study.pk}/change/", form)
    assert response.status_code == 200 and b"cannot open: the ti image of" in response.content
    study.refresh_from_db()
    assert study.status == Study.Status.DRAFT


def test_a_stimulus_lost_after_opening_is_a_404_and_a_log_line(study, caplog):
    bot = Bot(study, "PROLIFIC_PID=lost1")
    bot.consent()
    bot.answer()  # the instructions
    html, _ = bot.current()
    left = re.search(r'<img src="([^"]+)" alt="Image on the left"', html).group(1)
    for image in GeneratedImage.objects.all():
        default_storage.delete(image.image.name)
    with caplog.at_level(logging.ERROR, logger="studies"):
        response = bot.client.get(left)
    assert response.status_code == 404
    assert any("cannot be served" in record.getMessage() and record.name == "studies.views" for record in caplog.records)


def test_study_status_opens_a_draft_only_when_its_stimuli_can_be_read(run, capsys):
    study = study_create_from_generation(run=run, slug="cli")
    name = GeneratedImage.objects.filter(arm="base").first().image.name
    data = default_storage.open(name, "rb").read()
    default_storage.delete(name)
    with pytest.raises(CommandError, match=r"^study 'cli' cannot open: the base image of .*re-import the stimuli"):
        call_command("study_status", "cli", "open")
    assert Study.objects.get().status == Study.Status.DRAFT
    default_storage.save(name, ContentFile(data))
    call_command("study_status", "cli", "open")
    assert "Study 'cli' is open." in capsys.readouterr().out
    call_command("study_status", "cli", "closed")
    assert Study.objects.get(pk=study.pk).status == Study.Status.CLOSED
