"""Settings come from the environment with safe defaults."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.db import connection

REPO = Path(__file__).resolve().parent.parent


def settings_in_subprocess(env: dict[str, str], expression: str) -> subprocess.CompletedProcess:
    code = f"import django; from django.conf import settings; django.setup(); print({expression})"
    return subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={"PATH": "/usr/bin:/bin", "DJANGO_SETTINGS_MODULE": "peftlab.settings", **env},
    )


def test_production_refuses_to_start_without_secret_key():
    result = settings_in_subprocess({}, "settings.DEBUG")
    assert result.returncode != 0
    assert "SECRET_KEY is not set" in result.stderr


def test_production_defaults_are_safe():
    result = settings_in_subprocess(
        {"SECRET_KEY": "x" * 50, "ALLOWED_HOSTS": "peftlab.example.org"},
        "settings.DEBUG, settings.SESSION_COOKIE_SECURE, settings.CSRF_COOKIE_SECURE, settings.ALLOWED_HOSTS",
    )
    assert result.stdout.strip() == "False True True ['peftlab.example.org']"


def test_database_url_selects_postgresql_and_sqlite_is_the_default():
    result = settings_in_subprocess(
        {"DEBUG": "1", "DATABASE_URL": "postgres://postgres@127.0.0.1:5432/peftlab"},
        "settings.DATABASES['default']['ENGINE'], settings.DATABASES['default']['NAME']",
    )
    assert result.stdout.split() == ["django.db.backends.postgresql", "peftlab"]
    result = settings_in_subprocess({"DEBUG": "1"}, "settings.DATABASES['default']['ENGINE']")
    assert result.stdout.strip() == "django.db.backends.sqlite3"


def test_redis_url_configures_both_queues():
    result = settings_in_subprocess(
        {"DEBUG": "1", "REDIS_URL": "redis://cache:6379/3"},
        "sorted(settings.RQ_QUEUES), settings.RQ_QUEUES['gpu']['URL']",
    )
    assert result.stdout.strip() == "['default', 'gpu'] redis://cache:6379/3"


@pytest.mark.django_db
def test_suite_runs_on_the_database_it_was_given():
    expected = "postgresql" if os.environ.get("DATABASE_URL", "").startswith("postgres") else "sqlite"
    assert connection.vendor == expected


@pytest.mark.django_db
def test_home_page_and_admin_login_render(client):
    assert "peftlab" in client.get("/").content.decode()
    assert client.get("/admin/login/").status_code == 200
