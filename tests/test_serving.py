"""Production serving: /healthz, settings per server, static files, and no public URL for media."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.contrib.auth.models import User
from django.core.files.base import ContentFile
from django.test import Client

from generation.models import GeneratedImage, GenerationRun, Prompt, PromptSet

REPO = Path(__file__).resolve().parent.parent


def python(code: str, **env: str) -> str:
    """Run `code` in a fresh interpreter at the repository root with production-like settings."""
    base = {
        k: v
        for k, v in os.environ.items()
        if k not in {"DEBUG", "BEHIND_PROXY", "CONN_MAX_AGE", "DATABASE_URL", "DJANGO_SETTINGS_MODULE"}
    }
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO,
        env={**base, "SECRET_KEY": "x" * 50, "ALLOWED_HOSTS": "example.org", **env},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout.strip().splitlines()[-1]


SETTINGS = (
    "import json, os; os.environ.setdefault('DJANGO_SETTINGS_MODULE', 'peftlab.settings');"
    "from django.conf import settings as s;"
    "print(json.dumps([s.DATABASES['default']['CONN_MAX_AGE'], getattr(s, 'SECURE_PROXY_SSL_HEADER', None),"
    " s.SECURE_HSTS_SECONDS, s.MIDDLEWARE[1]]))"
)


def test_persistent_connections_only_under_gunicorn_and_proxy_headers_only_when_asked():
    # runserver (a thread per request) and RQ workers: a connection per request.
    assert python(SETTINGS) == json.dumps([0, None, 0, "whitenoise.middleware.WhiteNoiseMiddleware"])
    # gunicorn.conf.py sets CONN_MAX_AGE for its worker threads (a fixed number, one connection each).
    under_gunicorn = "import runpy; runpy.run_path('gunicorn.conf.py');" + SETTINGS
    assert json.loads(python(under_gunicorn))[0] == 60
    behind_proxy = json.loads(python(SETTINGS, BEHIND_PROXY="1", SECURE_HSTS_SECONDS="31536000"))
    assert behind_proxy[1:3] == [["HTTP_X_FORWARDED_PROTO", "https"], 31536000]


def test_gunicorn_takes_its_worker_count_from_the_environment():
    code = "import runpy; print(runpy.run_path('gunicorn.conf.py')['workers'])"
    assert python(code, WEB_CONCURRENCY="3") == "3"


def test_gunicorn_runs_threads_that_keep_connections_longer_than_the_proxy():
    # Sync workers cannot keep a connection alive; a keep-alive shorter than Caddy's (2 min) or nginx's (60 s)
    # upstream idle timeout lets gunicorn close a connection the proxy is sending on.
    code = "import json, runpy; c = runpy.run_path('gunicorn.conf.py'); print(json.dumps([c['worker_class'], c['threads'], c['keepalive']]))"
    worker_class, threads, keepalive = json.loads(python(code, GUNICORN_THREADS="6"))
    assert (worker_class, threads) == ("gthread", 6) and keepalive > 120


HEALTH = (
    "import io, json, os; os.environ['DJANGO_SETTINGS_MODULE'] = 'peftlab.settings';"
    "from peftlab.wsgi import application;"
    "environ = {'REQUEST_METHOD': 'GET', 'PATH_INFO': '/healthz', 'SERVER_NAME': 'example.org', 'SERVER_PORT': '443',"
    " 'HTTP_HOST': 'example.org', 'wsgi.url_scheme': 'https', 'wsgi.input': io.BytesIO(), 'wsgi.errors': io.StringIO()};"
    "statuses = [];"
    "body = b''.join(application(environ, lambda status, headers: statuses.append(status)));"
    "print(json.dumps([statuses[0], body.decode()]))"
)


def test_healthz_answers_ok_with_a_database_and_503_without(tmp_path):
    ok = json.loads(python(HEALTH, DATABASE_URL=f"sqlite:///{tmp_path / 'h.sqlite3'}"))
    assert ok == ["200 OK", "ok\n"]
    # Nothing listens on port 1: the check must say the database is down, not crash.
    down = json.loads(python(HEALTH, DATABASE_URL="postgres://postgres@127.0.0.1:1/none"))
    assert down[0] == "503 Service Unavailable" and down[1].startswith("database unavailable")


@pytest.mark.django_db
def test_gallery_images_are_staff_only_and_media_has_no_public_url(settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path / "media"
    prompt_set = PromptSet.objects.create(name="s")
    run = GenerationRun.objects.create(
        name="r", status="finished", prompt_set=prompt_set, arms=["base"], config={"seeds": [0]}
    )
    prompt = Prompt.objects.create(prompt_set=prompt_set, position=0, landmark="L", text="t")
    image = GeneratedImage(run=run, arm="base", prompt=prompt, seed=0, rendered_prompt="t", sha256="0" * 64)
    image.image.save("x.png", ContentFile(b"\x89PNG pixels"), save=False)
    image.width = image.height = 8
    image.save()
    staff = Client()
    staff.force_login(User.objects.create_user("r", is_staff=True))
    gallery = staff.get(f"/generation/runs/{run.pk}/").content.decode()
    url = f"/generation/runs/{run.pk}/images/{image.pk}.png"
    assert url in gallery and image.image.name not in gallery
    assert b"".join(staff.get(url).streaming_content) == b"\x89PNG pixels"
    assert Client().get(url).status_code == 302  # to the login page
    assert Client().get(f"/media/{image.image.name}").status_code == 404
    assert staff.get(f"/generation/runs/{run.pk + 1}/images/{image.pk}.png").status_code == 404
