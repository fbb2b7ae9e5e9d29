"""Commands start with no environment at all, and a misconfiguration ends them in one line, never a traceback.

Each subprocess gets only PATH and HOME (plus the variable under test), as in a fresh shell on a new machine.
"""

import socket
import subprocess
import sys
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone
from redis.exceptions import ConnectionError as RedisConnectionError

from peftlab.models import Job

REPO = Path(__file__).resolve().parent.parent


def closed_port() -> int:
    """A port on 127.0.0.1 that nothing listens on."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def run(tmp_path: Path, *argv: str, **env: str) -> subprocess.CompletedProcess:
    """Run `argv` from the repository with PATH, HOME and `env` only."""
    return subprocess.run(
        argv,
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
        env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), **env},
    )


def manage(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    """`python manage.py ARGS` with PATH, HOME and `env` only."""
    return run(tmp_path, sys.executable, "manage.py", *args, **env)


def assert_one_line_error(result: subprocess.CompletedProcess, *expected: str) -> str:
    """The command failed with exactly one line on stderr that contains every `expected` text."""
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    for text in expected:
        assert text in lines[0]
    return lines[0]


@pytest.mark.slow  # imports the trainer (transformers)
def test_train_lora_help_works_in_an_empty_environment(tmp_path):
    result = manage(tmp_path, "train_lora", "--help")
    assert result.returncode == 0, result.stderr
    assert "--data" in result.stdout


def test_help_lists_peftlab_commands_in_an_empty_environment(tmp_path):
    result = manage(tmp_path, "help")
    assert result.returncode == 0, result.stderr
    assert "train_lora" in result.stdout and "analyze_study" in result.stdout
    assert "not properly configured" not in result.stdout + result.stderr


def test_a_database_url_with_an_unknown_scheme_is_one_line(tmp_path):
    result = manage(tmp_path, "jobs", "list", DATABASE_URL="postgress://peftlab:hunter2@db/peftlab")
    line = assert_one_line_error(result, "DATABASE_URL", "postgres://USER:PASSWORD@HOST:5432/NAME")
    assert "hunter2" not in line


# --skip-checks: the system checks import every app's views (transformers, ~9 s) and never touch the database.
@pytest.mark.parametrize("command", [["jobs", "list", "--skip-checks"], ["migrate", "--skip-checks"]])
def test_unreachable_postgresql_is_one_line(tmp_path, command):
    url = f"postgres://postgres:hunter2@127.0.0.1:{closed_port()}/peftlab"
    result = manage(tmp_path, *command, DATABASE_URL=url, PEFTLAB_DATA_DIR=str(tmp_path / "data"))
    line = assert_one_line_error(result, "cannot connect to PostgreSQL database 'peftlab'", "DATABASE_URL")
    assert "hunter2" not in line


def test_a_database_without_migrations_says_to_migrate(tmp_path):
    url = f"sqlite:///{tmp_path / 'new.sqlite3'}"
    result = manage(
        tmp_path, "jobs", "list", "--skip-checks", DATABASE_URL=url, PEFTLAB_DATA_DIR=str(tmp_path / "data")
    )
    assert_one_line_error(result, "not applied: run python manage.py migrate")


def test_an_unwritable_data_dir_is_one_line(tmp_path):
    (tmp_path / "a-file").write_text("")  # tests run as root too, where permissions would not stop a write
    result = manage(tmp_path, "jobs", "list", PEFTLAB_DATA_DIR=str(tmp_path / "a-file" / "data"))
    assert_one_line_error(result, "PEFTLAB_DATA_DIR", "export SECRET_KEY")


@pytest.mark.django_db
def test_unreachable_redis_is_one_line(settings):
    url = f"redis://:hunter2@127.0.0.1:{closed_port()}/0"
    settings.REDIS_URL = url
    settings.RQ_QUEUES = {name: {"URL": url} for name in ("default", "gpu")}
    Job.objects.create(
        kind=Job.Kind.DATASET,
        func_path="trainer.jobs.dataset_prepare_job",
        rq_job_id="an-rq-job",
        enqueued_at=timezone.now(),
    )
    with pytest.raises(
        CommandError, match=r"cannot reach Redis at REDIS_URL=redis://127\.0\.0\.1:\d+/0 "
    ) as caught:
        call_command("jobs", "reconcile")
    assert "hunter2" not in str(caught.value)
    with pytest.raises(RedisConnectionError):  # --traceback still shows where it failed
        call_command("jobs", "reconcile", traceback=True)


def test_gunicorn_refuses_to_serve_without_secret_key_and_allowed_hosts(tmp_path):
    gunicorn = Path(sys.executable).with_name("gunicorn")
    result = run(tmp_path, str(gunicorn), "peftlab.wsgi", "--bind", "127.0.0.1:0", "--workers", "1")
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    refusals = [line for line in result.stderr.splitlines() if "will not serve" in line]
    assert refusals == [
        "peftlab will not serve without SECRET_KEY and ALLOWED_HOSTS from the environment: export "
        "SECRET_KEY=<a long random string, the same on every machine that shares the database> and "
        "ALLOWED_HOSTS=<the site's host names, comma-separated>."
    ]


def test_the_asgi_entry_point_refuses_without_allowed_hosts(tmp_path):
    result = run(tmp_path, sys.executable, "-c", "import peftlab.asgi", SECRET_KEY="k" * 50)
    assert_one_line_error(result, "will not serve without ALLOWED_HOSTS from the environment")
