"""A real browser (Playwright + Debian's Chromium) completes the seed study with the keyboard and with clicks."""

import re

import pytest
from django.core.management import call_command

from generation.models import GenerationRun
from studies.models import Participant, Study

LEFT_IMAGE_LOADED = """() => {
  const image = document.querySelector('img[alt="Image on the left"]');
  return image !== null && image.complete && image.naturalWidth > 0;
}"""
pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


@pytest.mark.parametrize("use_keyboard", [True, False], ids=["keyboard", "clicks"])
def test_a_browser_completes_the_seed_study(browser, live_server, seed_study_dir, use_keyboard):
    call_command("import_stimuli", str(seed_study_dir / "manifest.json"))
    run = GenerationRun.objects.get()
    call_command(
        "create_study", "--from-generation", run.pk, "--slug", "seed", "--open", "--attention-checks", "1"
    )
    study = Study.objects.get()
    page = browser.new_page(viewport={"width": 390, "height": 800} if use_keyboard else None)
    page.goto(f"{live_server.url}/studies/seed/?PROLIFIC_PID=browser1&STUDY_ID=s&SESSION_ID=x")
    page.get_by_role("button", name="I agree, start the study").click()
    page.get_by_role("button", name="Start").click()
    for number in range(1, 5 * 3 + 1 + 1):
        page.wait_for_selector(f"text=Page {number} of 16")
        check = re.search(r"choose the image on the (left|right)", page.content())
        side = check.group(1) if check else ("left" if number % 2 else "right")
        # The images really load (decoded to their 512 px width).
        page.wait_for_function(LEFT_IMAGE_LOADED)
        assert page.eval_on_selector('img[alt="Image on the left"]', "img => img.naturalWidth") == 512
        if use_keyboard:
            page.keyboard.press("ArrowLeft" if side == "left" else "ArrowRight")
        else:
            page.get_by_role("button", name=f"Image on the {side}").click()
    page.get_by_label("Anything you would like to tell us? (optional)").fill("from a browser")
    page.get_by_role("button", name="Finish").click()
    page.wait_for_selector("#completion-code")
    assert page.inner_text("#completion-code") == study.completion_code
    participant = Participant.objects.get()
    assert participant.finished_at and participant.feedback == "from a browser"
    assert participant.responses.count() == 16
    assert (
        not participant.responses.filter(trial__is_attention_check=True)
        .exclude(choice=study.trials.get(is_attention_check=True).expected_choice)
        .exists()
    )
