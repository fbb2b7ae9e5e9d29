"""A researcher builds, previews and opens a study in the console alone; a participant then answers it in a browser."""

import re
from pathlib import Path

import pytest
from django.conf import settings
from django.contrib.auth import get_user_model
from django.test import Client

from studies.models import Participant, Study

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
