"""Chromium reports what the participant experienced: the viewport and touch at consent, the time on each page."""

import re

import pytest

from studies.models import Participant

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


@pytest.mark.parametrize(
    "device, expected",
    [
        ({"viewport": {"width": 390, "height": 844}, "has_touch": True, "is_mobile": True}, (390, 844, True)),
        ({"viewport": {"width": 1280, "height": 800}, "has_touch": False}, (1280, 800, False)),
    ],
    ids=["phone", "laptop"],
)
def test_chromium_records_screen_touch_browser_and_time_on_each_page(browser, live_server, study, device, expected):
    context = browser.new_context(**device)
    page = context.new_page()
    page.goto(f"{live_server.url}/studies/{study.slug}/?PROLIFIC_PID=chromium")
    page.locator('button[value="agree"]').click()
    page.locator('button[type="submit"]', has_text="Start").click()
    answered = 0
    while True:
        page.wait_for_load_state()
        if page.locator("#trial-form").count() == 0:
            break
        check = re.search(r"choose the image on the (left|right)", page.content())
        page.locator(f'#trial-form button[value="{check.group(1) if check else "left"}"]').click()
        answered += 1
        page.wait_for_function(f"() => !document.querySelector('input[name=step][value=\"{answered}\"]')")
    context.close()
    participant = Participant.objects.get(external_id="chromium")
    assert (participant.viewport_width, participant.viewport_height, participant.is_touch) == expected
    assert participant.browser_family == "Chrome" and participant.browser_version.split(".")[0].isdigit()
    times = list(participant.responses.values_list("client_ms", flat=True))
    assert len(times) == answered == 20 and all(ms is not None and ms >= 0 for ms in times)
