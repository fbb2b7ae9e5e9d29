"""Serving participants: a walk through the WSGI app imports no ML library; the image on the left is the arm
stored as left; image tokens survive a public SECRET_KEY."""

import io
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from django.utils.crypto import salted_hmac
from PIL import Image

from generation.models import GeneratedImage
from studies.models import Participant, Response

from .conftest import Bot, choose_attentively

REPO = Path(__file__).resolve().parents[2]
HEAVY = ("torch", "diffusers", "transformers", "pandas", "matplotlib")
DEVELOPMENT_KEY = "django-insecure-peftlab-development-only"  # public: it is in the repository

# Runs in a fresh interpreter: build a study on a SQLite file, serve peftlab.wsgi.application on a real
# socket, walk one participant through it with CSRF and cookies as a browser has them, fetch every image.
WALK = r"""
import http.cookiejar, io, json, re, sys, threading, urllib.parse, urllib.request
from wsgiref.simple_server import WSGIRequestHandler, make_server

import django
django.setup()
from django.core.management import call_command
call_command("migrate", verbosity=0)
from django.core.files.base import ContentFile
from PIL import Image
from generation.models import GeneratedImage, GenerationRun, Prompt, PromptSet
from studies.models import Participant, Study
from studies.services import study_create_from_generation
from peftlab.wsgi import application

run = GenerationRun.objects.create(name="r", status="finished", prompt_set=PromptSet.objects.create(name="s"), arms=["a", "b"])
for position in range(2):
    prompt = Prompt.objects.create(prompt_set=run.prompt_set, position=position, landmark=f"L{position}", text="t")
    for arm in ("a", "b"):
        buffer = io.BytesIO()
        Image.new("RGB", (8, 8), (position, 9, 9)).save(buffer, format="PNG")
        image = GeneratedImage(run=run, arm=arm, prompt=prompt, seed=0, rendered_prompt="t", sha256="0" * 64)
        image.image.save("x.png", ContentFile(buffer.getvalue()), save=False)
        image.width = image.height = 8
        image.save()
study = study_create_from_generation(run=run, arms=["a", "b"], slug="walk", status=Study.Status.OPEN, attention_checks=1)

class Quiet(WSGIRequestHandler):
    def log_message(self, *args):
        pass

server = make_server("127.0.0.1", 0, application, handler_class=Quiet)
threading.Thread(target=server.serve_forever, daemon=True).start()
base = f"http://127.0.0.1:{server.server_port}"
opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()))
statuses = []

def fetch(url, data=None):
    with opener.open(base + url if url.startswith("/") else url, data and urllib.parse.urlencode(data).encode()) as response:
        statuses.append(response.status)
        return response.geturl(), response.read()

def form_fields(html):
    return dict(re.findall(r'<input type="hidden" name="(\w+)" value="([^"]*)"', html))

url, html = fetch("/studies/walk/?PROLIFIC_PID=wsgi1")
url, html = fetch("/studies/walk/?PROLIFIC_PID=wsgi1", {**form_fields(html.decode()), "decision": "agree"})
images = 0
while True:
    text = html.decode()
    for src in re.findall(r'<img src="([^"]+)"', text):
        images += len(fetch(src)[1]) > 0
    fields = form_fields(text)
    if "step" not in fields:
        break
    choice = re.search(r"choose the image on the (left|right)", text)
    url, html = fetch(url, {**fields, "choice": choice.group(1) if choice else "left"})
server.shutdown()
participant = Participant.objects.get(external_id="wsgi1")
print(json.dumps({
    "finished": participant.finished_at is not None,
    "answers": participant.responses.count(),
    "images": images,
    "statuses": sorted(set(statuses)),
    "heavy": [name for name in sys.argv[1:] if name in sys.modules],
}))
"""


def test_a_participant_walk_through_the_wsgi_app_imports_no_ml_library(tmp_path):
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "tests.settings",
        "DATABASE_URL": f"sqlite:///{tmp_path / 'walk.sqlite3'}",
        "MEDIA_ROOT": str(tmp_path / "media"),
        "ALLOWED_HOSTS": "127.0.0.1",
        "SECURE_COOKIES": "0",  # plain http on 127.0.0.1: the cookies must travel
        "PYTHONPATH": str(REPO),
    }
    done = subprocess.run(
        [sys.executable, "-c", WALK, *HEAVY], cwd=REPO, env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    # Two prompts x one pair x three questions, plus one attention check; two images per trial page.
    assert result["finished"] and result["answers"] == 7 and result["images"] == 14
    assert result["statuses"] == [200]
    assert result["heavy"] == []


def pixels(data: bytes) -> bytes:
    return Image.open(io.BytesIO(data)).convert("RGB").tobytes()


@pytest.mark.django_db
def test_the_image_shown_on_the_left_is_the_arm_stored_as_left(study):
    bot = Bot(study, "PROLIFIC_PID=pixels")
    bot.consent()
    participant = Participant.objects.get(external_id="pixels")
    checked = 0
    while True:
        html, step = bot.current()
        if not step:
            break
        sources = re.findall(r'<img src="([^"]+)" alt="Image on the (left|right)"', html)
        if not sources:
            bot.answer()
            continue
        shown = {side: pixels(bot.client.get(src).content) for src, side in sources}
        choice = choose_attentively(html)
        bot.client.post(bot.url, {"step": step, "choice": choice})
        answer = Response.objects.filter(participant=participant).latest("id")
        for side, arm in (("left", answer.left_arm), ("right", answer.right_arm)):
            stored = GeneratedImage.objects.get(run=study.generation_run, prompt=answer.trial.prompt, arm=arm)
            assert shown[side] == pixels(stored.image.read()), f"{side} image is not arm {arm}"
        assert answer.chosen_arm == {"left": answer.left_arm, "right": answer.right_arm}[choice]
        checked += 1
    assert checked == Response.objects.filter(participant=participant).count() == 20


@pytest.mark.django_db
def test_image_tokens_cannot_be_inverted_with_the_public_development_key(study, settings):
    """A participant who reads the repository knows DEBUG's key, their code and that image ids run per arm."""
    settings.SECRET_KEY = DEVELOPMENT_KEY  # a server run with DEBUG=1
    bot = Bot(study)
    bot.consent()
    tokens = set()
    while True:
        html, step = bot.current()
        tokens |= set(re.findall(r"/m/([^/\"]+)\.png", html))
        if not bot.answer(choose_attentively):
            break
    code = bot.url.rstrip("/").rsplit("/", 1)[-1]
    assert len(tokens) >= 8
    assert all(re.fullmatch(r"[0-9a-f]{32}", token) for token in tokens)
    image_ids = GeneratedImage.objects.values_list("pk", flat=True)
    guesses = {
        salted_hmac(salt, f"{code}:image:{pk}", secret=DEVELOPMENT_KEY, algorithm=algorithm).hexdigest()[:32]
        for pk in range(1, max(image_ids) + 50)
        for salt in ("studies.media", "")
        for algorithm in ("sha1", "sha256")
    }
    assert tokens.isdisjoint(guesses)


def test_the_attack_above_inverts_tokens_keyed_by_secret_key():
    """The inversion in the test above is real: it decodes every token of the old SECRET_KEY scheme."""
    old_scheme = salted_hmac("studies.media", "CODE:image:17", secret=DEVELOPMENT_KEY).hexdigest()[:32]
    guesses = {
        salted_hmac("studies.media", f"CODE:image:{pk}", secret=DEVELOPMENT_KEY).hexdigest()[:32]: pk
        for pk in range(1, 100)
    }
    assert guesses[old_scheme] == 17
