"""Fixtures for studies: a small generation run built directly (tiny PNGs), a study over it, a bot client, and
Debian's Chromium through Playwright."""

import io
import re
from pathlib import Path

import pytest
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.test import Client
from PIL import Image, PngImagePlugin

from generation.models import GeneratedImage, GenerationRun, Prompt, PromptSet
from studies.models import Study
from studies.services import study_create_from_generation

CHROMIUM = Path("/usr/bin/chromium")
ARMS = ["base", "lora", "ti"]
COLORS = {"base": (200, 40, 40), "lora": (40, 200, 40), "ti": (40, 40, 200)}


def png_bytes(color: tuple[int, int, int], text: str) -> bytes:
    """A 16x16 PNG carrying a text chunk, as rendering tools write them (studies must strip it)."""
    info = PngImagePlugin.PngInfo()
    info.add_text("parameters", text)
    buffer = io.BytesIO()
    Image.new("RGB", (16, 16), color).save(buffer, format="PNG", pnginfo=info)
    return buffer.getvalue()


@pytest.fixture(autouse=True)
def media_root(settings, tmp_path):
    """Keep uploaded stimuli out of the repository's var/media."""
    settings.MEDIA_ROOT = tmp_path / "media"
    return settings.MEDIA_ROOT


@pytest.fixture
def run(db) -> GenerationRun:
    """A finished run: two landmarks x three arms, one seed, references stored in media."""
    prompt_set = PromptSet.objects.create(name="test-landmarks")
    run = GenerationRun.objects.create(
        name="test run", status=GenerationRun.Status.FINISHED, prompt_set=prompt_set, arms=ARMS
    )
    for position, landmark in enumerate(["Zorblax Tower", "Quintessa Bridge"]):
        references = [
            default_storage.save(
                f"references/{landmark[:5]}-{i}.png", ContentFile(png_bytes((9, 9, 9), landmark))
            )
            for i in range(2)
        ]
        prompt = Prompt.objects.create(
            prompt_set=prompt_set,
            position=position,
            landmark=landmark,
            text=f"ghiblivis {landmark}, whimsical painterly vista",
            reference_images=references,
        )
        for arm in ARMS:
            image = GeneratedImage(
                run=run, arm=arm, prompt=prompt, seed=7, rendered_prompt=prompt.text, sha256="0" * 64
            )
            image.image.save("x.png", ContentFile(png_bytes(COLORS[arm], f"{arm} {prompt.text}")), save=False)
            image.width, image.height = 16, 16  # FieldFile.save(save=False) leaves them None
            image.save()
    return run


@pytest.fixture
def study(run) -> Study:
    """An open study over `run` with the reference questions and two attention checks."""
    return study_create_from_generation(
        run=run, arms=ARMS, title="Picture preferences", slug="pictures", status=Study.Status.OPEN
    )


class Bot:
    """A participant driven through django.test.Client: reads the page, answers, follows redirects."""

    def __init__(self, study: Study, query: str = "", client: Client | None = None):
        self.study = study
        self.client = client or Client()
        self.query = query
        self.pages: list[str] = []

    @property
    def entry(self) -> str:
        return f"/studies/{self.study.slug}/" + (f"?{self.query}" if self.query else "")

    def get(self, url: str):
        response = self.client.get(url)
        if response.status_code == 200 and response["Content-Type"].startswith("text/html"):
            self.pages.append(response.content.decode())
        return response

    def consent_form(self) -> dict[str, str]:
        """Open the consent page; returns its hidden fields."""
        page = self.get(self.entry)
        assert page.status_code == 200
        data = dict(re.findall(r'<input type="hidden" name="(\w+)" value="([^"]*)"', page.content.decode()))
        data.pop("csrfmiddlewaretoken", None)
        return data

    def consent(self, decision: str = "agree", form: dict[str, str] | None = None) -> str:
        """Agree (or decline) on the consent page (opened now, or `form` opened before); returns the page URL."""
        data = self.consent_form() if form is None else form
        response = self.client.post(self.entry, {**data, "decision": decision})
        assert response.status_code == 302
        self.url = response["Location"]
        return self.url

    def current(self) -> tuple[str, str]:
        """The current page's HTML and its step token."""
        response = self.get(self.url)
        html = response.content.decode() if response.status_code == 200 else ""
        match = re.search(r'name="step" value="(\d+)"', html)
        return html, match.group(1) if match else ""

    def answer(self, choose=lambda html: "left") -> bool:
        """Answer the current page; False once no page asks anything."""
        html, step = self.current()
        if not step:
            return False
        if 'id="trial-form"' in html:
            data = {"step": step, "choice": choose(html)}
        else:
            data = {"step": step, "feedback": "fine"} if 'name="feedback"' in html else {"step": step}
        response = self.client.post(self.url, data)
        assert response.status_code == 302 and response["Location"] == self.url
        return True

    def finish(self, choose=lambda html: "left") -> None:
        while self.answer(choose):
            pass


def choose_attentively(html: str) -> str:
    """Follow attention-check instructions, otherwise prefer the right image."""
    match = re.search(r"please choose the image on the (left|right)", html)
    return match.group(1) if match else "right"


@pytest.fixture
def bot_class():
    return Bot


@pytest.fixture
def browser(monkeypatch):
    sync_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright for browser tests")
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is missing: apt-get install chromium (as .ci/run does) for browser tests")
    # Playwright's sync API keeps an event loop running in this thread; Django's ORM calls here stay sync.
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM),
            headless=True,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                  "--disable-sync", "--no-first-run"],
        )  # fmt: skip
        yield browser
        browser.close()
