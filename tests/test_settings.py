"""Settings come from the environment with safe defaults; commands need none of it."""

import os
import stat
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.core.management import call_command
from django.core.management.base import SystemCheckError
from django.db import connection

from peftlab.checks import serving_refusal
from peftlab.settings import database_from_url, installation_secret_key

REPO = Path(__file__).resolve().parent.parent


def settings_in_subprocess(
    tmp_path: Path, env: dict[str, str], expression: str
) -> subprocess.CompletedProcess:
    """Print `expression` from peftlab's settings in a fresh interpreter with only `env` (and a private data dir)."""
    code = f"import django; from django.conf import settings; django.setup(); print({expression})"
    return subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={
            "PATH": "/usr/bin:/bin",
            "HOME": str(tmp_path),
            "DJANGO_SETTINGS_MODULE": "peftlab.settings",
            "PEFTLAB_DATA_DIR": str(tmp_path / "data"),
            **env,
        },
    )


def test_without_secret_key_one_private_key_is_made_and_reused(tmp_path):
    first = settings_in_subprocess(tmp_path, {}, "settings.SECRET_KEY, settings.DEBUG")
    second = settings_in_subprocess(tmp_path, {}, "settings.SECRET_KEY, settings.DEBUG")
    key_file = tmp_path / "data" / "secret_key"
    assert first.returncode == 0, first.stderr
    assert first.stdout == second.stdout  # sessions and tokens survive a restart
    key, debug = first.stdout.split()
    assert key == key_file.read_text() and len(key) >= 50
    assert debug == "False"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600


def test_secret_key_from_the_environment_wins_and_writes_no_file(tmp_path):
    result = settings_in_subprocess(tmp_path, {"SECRET_KEY": "k" * 50}, "settings.SECRET_KEY")
    assert result.stdout.strip() == "k" * 50
    assert not (tmp_path / "data" / "secret_key").exists()


def test_processes_starting_together_share_one_key(tmp_path):
    path = tmp_path / "data" / "secret_key"
    with ThreadPoolExecutor(8) as pool:
        keys = set(pool.map(lambda _: installation_secret_key(path), range(16)))
    assert keys == {path.read_text()}
    assert [p.name for p in path.parent.iterdir()] == ["secret_key"]  # no temporary files left behind


def test_a_data_dir_that_cannot_be_written_names_the_variable(tmp_path):
    (tmp_path / "a-file").write_text("")
    with pytest.raises(ImproperlyConfigured, match=r"^PEFTLAB_DATA_DIR: .*export SECRET_KEY"):
        installation_secret_key(tmp_path / "a-file" / "data" / "secret_key")


def test_production_defaults_are_safe(tmp_path):
    result = settings_in_subprocess(
        tmp_path,
        {"SECRET_KEY": "x" * 50, "ALLOWED_HOSTS": "peftlab.example.org"},
        "settings.DEBUG, settings.SESSION_COOKIE_SECURE, settings.CSRF_COOKIE_SECURE, settings.ALLOWED_HOSTS",
    )
    assert result.stdout.strip() == "False True True ['peftlab.example.org']"


def test_allowed_hosts_default_to_loopback_names_only(tmp_path):
    result = settings_in_subprocess(tmp_path, {}, "settings.ALLOWED_HOSTS")
    assert result.stdout.strip() == "['localhost', '127.0.0.1', '[::1]']"


def test_database_url_selects_postgresql_and_sqlite_is_the_default(tmp_path):
    result = settings_in_subprocess(
        tmp_path,
        {"DATABASE_URL": "postgres://postgres@127.0.0.1:5432/peftlab"},
        "settings.DATABASES['default']['ENGINE'], settings.DATABASES['default']['NAME']",
    )
    assert result.stdout.split() == ["django.db.backends.postgresql", "peftlab"]
    result = settings_in_subprocess(tmp_path, {}, "settings.DATABASES['default']['ENGINE']")
    assert result.stdout.strip() == "django.db.backends.sqlite3"


@pytest.mark.parametrize(
    "url",
    [
        "foo://x",
        "postgres//user:secret@host/db",
        "postgres://user:secret@host:notaport/db",
        "mysql://u:secret@h/db",
    ],
)
def test_a_database_url_peftlab_cannot_use_is_refused_without_showing_it(url):
    with pytest.raises(
        ImproperlyConfigured, match=r"^DATABASE_URL is not a PostgreSQL or SQLite URL"
    ) as caught:
        database_from_url(url, default="sqlite:///unused.sqlite3")
    assert "secret" not in str(caught.value)


def test_a_sqlite_folder_that_cannot_be_made_names_the_variable(tmp_path):
    (tmp_path / "a-file").write_text("")
    with pytest.raises(ImproperlyConfigured, match=r"^DATABASE_URL: cannot create .*a-file"):
        database_from_url(
            f"sqlite:///{tmp_path / 'a-file' / 'db.sqlite3'}", default="sqlite:///unused.sqlite3"
        )


def test_redis_url_configures_both_queues(tmp_path):
    result = settings_in_subprocess(
        tmp_path,
        {"REDIS_URL": "redis://cache:6379/3"},
        "sorted(settings.RQ_QUEUES), settings.RQ_QUEUES['gpu']['URL']",
    )
    assert result.stdout.strip() == "['default', 'gpu'] redis://cache:6379/3"


@pytest.mark.parametrize(
    ("env", "missing"),
    [
        ({}, "SECRET_KEY and ALLOWED_HOSTS"),
        ({"SECRET_KEY": "k" * 50}, "ALLOWED_HOSTS"),
        ({"ALLOWED_HOSTS": "a.org"}, "SECRET_KEY"),
    ],
)
def test_serving_needs_secret_key_and_allowed_hosts_from_the_environment(monkeypatch, env, missing):
    for name in ("SECRET_KEY", "ALLOWED_HOSTS"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert serving_refusal().startswith(f"peftlab will not serve without {missing} from the environment")


def test_check_deploy_refuses_without_the_serving_environment(monkeypatch):
    monkeypatch.delenv("SECRET_KEY", raising=False)
    monkeypatch.delenv("ALLOWED_HOSTS", raising=False)
    with pytest.raises(SystemCheckError, match="peftlab.E001"):
        call_command("check", deploy=True)
    monkeypatch.setenv("SECRET_KEY", "k" * 50)
    monkeypatch.setenv("ALLOWED_HOSTS", "peftlab.example.org")
    assert serving_refusal() is None
    call_command("check", deploy=True, fail_level="ERROR")


@pytest.mark.django_db
def test_suite_runs_on_the_database_it_was_given():
    expected = "postgresql" if os.environ.get("DATABASE_URL", "").startswith("postgres") else "sqlite"
    assert connection.vendor == expected


@pytest.mark.django_db
def test_home_page_and_admin_login_render(client):
    assert "peftlab" in client.get("/").content.decode()
    assert client.get("/admin/login/").status_code == 200
