"""Phones: at 390x844 both images and both answer buttons of every question page, reference questions
included, are on the first screen, side by side, with touch labels; the desktop layout is kept."""

import os
import re
from pathlib import Path

import pytest
from django.core.management import call_command

from generation.models import GenerationRun
from studies.models import Participant

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

PHONE = {"viewport": {"width": 390, "height": 844}, "is_mobile": True, "has_touch": True, "device_scale_factor": 2}
DESKTOP = {"viewport": {"width": 1280, "height": 800}}
IMAGES_LOADED = """() => [...document.querySelectorAll('.pick img, .thumbs img')]
  .every(image => image.complete && image.naturalWidth > 0)"""
# Set PEFTLAB_SHOTS_DIR to keep a screenshot of the first plain and first reference page per device.
SHOTS = os.environ.get("PEFTLAB_SHOTS_DIR")


def inside(box: dict, viewport: dict) -> bool:
    return box["x"] >= 0 and box["y"] >= 0 and box["x"] + box["width"] <= viewport["width"] and (
        box["y"] + box["height"] <= viewport["height"]
    )


@pytest.mark.parametrize("device", ["phone", "desktop"])
def test_every_question_fits_the_first_screen(browser, live_server, seed_study_dir, device):
    call_command("import_stimuli", str(seed_study_dir / "manifest.json"))
    call_command("create_study", "--from-generation", GenerationRun.objects.get().pk, "--slug", "seed", "--open")
    options = PHONE if device == "phone" else DESKTOP
    viewport = options["viewport"]
    context = browser.new_context(**options)
    page = context.new_page()
    violations = []
    page.on("console", lambda message: "Content Security Policy" in message.text and violations.append(message.text))
    page.goto(f"{live_server.url}/studies/seed/?PROLIFIC_PID={device}")
    page.get_by_role("button", name="I agree, start the study").click()
    page.get_by_role("button", name="Start").click()
    kinds_seen, shot = set(), set()
    for number in range(1, 5 * 3 + 2 + 1):
        page.get_by_text(f"Page {number} of 17").wait_for()
        page.wait_for_function(IMAGES_LOADED)
        question = page.locator("#question").inner_text()
        kind = "reference" if page.locator(".thumbs img").count() else "plain"
        kinds_seen.add(kind)
        left, right = page.locator(".pick").nth(0), page.locator(".pick").nth(1)
        boxes = {
            "left image": page.locator('img[alt="Image on the left"]').bounding_box(),
            "right image": page.locator('img[alt="Image on the right"]').bounding_box(),
            "left button": left.bounding_box(),
            "right button": right.bounding_box(),
            **{f"{text} button": page.get_by_role("button", name=text).bounding_box()
               for text in ("Both equally", "Neither") if page.get_by_role("button", name=text).count()},
        }  # fmt: skip
        outside = {name: box for name, box in boxes.items() if not inside(box, viewport)}
        assert not outside, f"{device} page {number} ({kind}): {outside} outside {viewport}"
        # Side by side on every device, each image a real size (not a thumbnail).
        a, b = boxes["left image"], boxes["right image"]
        assert abs(a["y"] - b["y"]) < 1 and a["x"] + a["width"] <= b["x"]
        assert min(a["width"], a["height"]) >= (150 if device == "phone" else 300)
        labels = [left.locator(":scope > span").inner_text(), right.locator(":scope > span").inner_text()]
        assert labels == (["Left image", "Right image"] if device == "phone" else ["Left image (←)", "Right image (→)"])
        if SHOTS and kind not in shot:
            shot.add(kind)
            page.screenshot(path=str(Path(SHOTS) / f"field-a-{device}-{kind}.png"))
        check = re.search(r"choose the image on the (left|right)", question)
        (right if check and check.group(1) == "right" else left).click()
    assert kinds_seen == {"plain", "reference"}
    page.get_by_role("button", name="Finish").click()
    page.wait_for_selector("#completion-code")
    assert Participant.objects.get().responses.count() == 17
    assert not violations  # the arrow-key script and every style ran under the CSP
    context.close()
