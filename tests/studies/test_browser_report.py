"""A real browser (Playwright + Chromium) reads the report page and the dashboard as a researcher would."""

import os
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from django.contrib.auth.models import User
from django.core.management import call_command
from django.test import Client

from generation.models import GenerationRun
from studies.models import Study
from tests.analysis.conftest import answer_study

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]
FOREST_LOADED = """() => {
  const image = document.querySelector('#forest-plot img');
  return image !== null && image.complete && image.naturalWidth > 0;
}"""


def staff_page(browser, live_server, client: Client, viewport: dict):
    """A browser page logged in as staff (the session cookie of a logged-in Django test client)."""
    context = browser.new_context(viewport=viewport)
    host = urlsplit(live_server.url).hostname
    context.add_cookies(
        [{"name": "sessionid", "value": client.cookies["sessionid"].value, "domain": host, "path": "/"}]
    )
    return context.new_page()


def shot(page, name: str) -> None:
    """Save a full-page screenshot where SHOTS_DIR says (for the docs and reviews); nothing otherwise."""
    if os.environ.get("SHOTS_DIR"):
        page.screenshot(path=str(Path(os.environ["SHOTS_DIR"]) / f"report-{name}.png"), full_page=True)


def test_report_page_and_dashboard_in_a_browser_on_a_desktop_and_a_phone(
    browser, live_server, seed_study_dir
):
    call_command("import_stimuli", str(seed_study_dir / "manifest.json"))
    call_command(
        "create_study", "--from-generation", GenerationRun.objects.get().pk, "--slug", "seed", "--open"
    )
    study = Study.objects.get()
    study.arm_labels = {"lora": "LoRA (rank 8)", "ti": "Textual Inversion"}
    study.save()
    study.questions.filter(key="style").update(label="Style match")
    answer_study(study, participants=12, careless=2)
    client = Client()
    client.force_login(User.objects.create_user("researcher", password="x", is_staff=True))
    for width in (1280, 390):
        check_pages(
            staff_page(browser, live_server, client, {"width": width, "height": 900}), live_server.url, width
        )


def check_pages(page, url: str, width: int) -> None:
    """The report page and the dashboard at one window width."""

    page.goto(f"{url}/analysis/seed/")
    page.wait_for_function(FOREST_LOADED)
    # The forest plot is the first figure, above the paragraphs; the page never scrolls sideways.
    forest_top = page.eval_on_selector("#forest-plot", "e => e.getBoundingClientRect().top")
    assert forest_top < page.eval_on_selector("#results", "e => e.getBoundingClientRect().top")
    assert page.evaluate("document.documentElement.scrollWidth") <= width
    methods = page.inner_text("#methods")
    assert "t test of participants' own shares" in methods and "Holm" in methods
    assert "LoRA (rank 8) and Textual Inversion" in methods
    assert "12 took part, 2 excluded (2 failed an attention check), 10 analysed." in page.inner_text(
        "#exclusions"
    )
    assert "Style match" in page.inner_text("#headline-table")
    shot(page, f"page-{width}")

    page.goto(f"{url}/studies/seed/dashboard/")
    page.wait_for_selector("#live-headline img.forest")
    assert "10 analysed" in page.inner_text("#live-headline")
    audit = page.inner_text("#randomisation-audit")
    # Five trials each: each arm is on the left in two or three of them, so the shares are near 50 %.
    assert "LoRA (rank 8)" in audit and "Textual Inversion" in audit
    shot(page, f"dashboard-{width}")
