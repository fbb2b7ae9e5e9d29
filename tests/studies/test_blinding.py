"""Blinding: nothing a participant receives names an arm, a method, the prompt, the landmark or a file."""

import io
import re
from pathlib import Path

import pytest
from django.test import Client
from PIL import Image

from generation.models import GeneratedImage
from studies.models import Participant

from .conftest import ARMS, Bot, choose_attentively

pytestmark = pytest.mark.django_db

METHOD_WORDS = [
    "lora",
    "textual inversion",
    "dreambooth",
    "peft",
    "adapter",
    "embedding",
]  # not "method": <form method>


def png_chunk_types(data: bytes) -> list[bytes]:
    """The chunk types of a PNG file, in order."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    types, offset = [], 8
    while offset < len(data):
        length = int.from_bytes(data[offset : offset + 4], "big")
        types.append(data[offset + 4 : offset + 8])
        offset += 12 + length
    return types


def forbidden_words(study) -> list[str]:
    """Arm names, method names, prompts, landmarks and the stored file names of the study's stimuli."""
    words = [*study.arms, *METHOD_WORDS]
    for trial in study.trials.select_related("prompt", "image_a", "image_b"):
        words += [trial.prompt.text, trial.prompt.landmark, *trial.prompt.reference_images]
        words += [Path(image.image.name).name for image in (trial.image_a, trial.image_b)]
    return words


def assert_blind(text: str, words: list[str]) -> None:
    for word in words:
        assert not re.search(rf"\b{re.escape(word)}\b", text, re.IGNORECASE), f"{word!r} leaked"


def crawl(study, query: str = "") -> tuple[list[str], dict[str, bytes], list[str]]:
    """Walk a participant through the study; return pages, image bytes by URL, and response headers."""
    bot = Bot(study, query)
    headers: list[str] = []
    images: dict[str, bytes] = {}
    bot.consent()
    while True:
        html, step = bot.current()
        for src in re.findall(r'<img src="([^"]+)"', html):
            response = bot.client.get(src)
            assert response.status_code == 200 and response["Content-Type"] == "image/png"
            images[src] = response.content
            headers.append(str(response.headers))
        if not bot.answer(choose_attentively):
            break
        headers.append(str(bot.client.get(bot.url).headers))
    return bot.pages, images, headers


def test_no_arm_prompt_or_file_name_reaches_the_participant(study):
    words = forbidden_words(study)
    assert set(ARMS) <= set(words)
    pages, images, headers = crawl(study, "PROLIFIC_PID=blind1&STUDY_ID=s&SESSION_ID=x")
    assert len(pages) > 10 and len(images) >= 8
    for text in [*pages, *images, *headers]:
        assert_blind(text, words)
    for data in images.values():
        assert_blind(data.decode("latin-1"), words)
        # Only pixel chunks: the tEXt chunks the stored PNGs carry are gone.
        assert set(png_chunk_types(data)) <= {b"IHDR", b"PLTE", b"IDAT", b"IEND"}
    # The pixels are the stimuli's: two images per trial page, one arm's colour each.
    colours = {Image.open(io.BytesIO(data)).convert("RGB").getpixel((0, 0)) for data in images.values()}
    assert {(200, 40, 40), (40, 200, 40), (40, 40, 200)} <= colours


def test_image_tokens_are_per_participant(study):
    first = crawl(study)[1]
    second = crawl(study)[1]
    assert set(first).isdisjoint(second)
    # One participant's image URL is useless under another's code.
    url = next(iter(first))
    other = Participant.objects.exclude(code=url.split("/")[4]).first()
    assert Client().get(url.replace(url.split("/")[4], other.code)).status_code == 404


def test_stored_stimuli_still_have_their_text_chunks(study):
    """The fixture's PNGs carry arm names, so the test above really checks stripping."""
    image = GeneratedImage.objects.filter(arm="lora").first()
    assert b"tEXt" in image.image.read()
