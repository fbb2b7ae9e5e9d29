"""A process running an in-process job is SIGKILLed: reconcile fails the job, and a retry resumes it."""

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
STEPS = 40

pytestmark = pytest.mark.slow  # four Django processes, about 20 s


def manage(*args: str, env: dict) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "manage.py", *args],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def job_row(database: Path) -> tuple[str, str, int]:
    """The one job's status, error and steps done, read straight from the SQLite file."""
    with sqlite3.connect(database, timeout=30) as db:
        return db.execute("SELECT status, error, done FROM peftlab_job ORDER BY id LIMIT 1").fetchone()


def wait_for(predicate, what: str, timeout_s: float = 120.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def test_killed_in_process_job_is_failed_by_reconcile_and_resumed_by_retry(tmp_path):
    database, steps = tmp_path / "db.sqlite3", tmp_path / "steps"
    steps.mkdir()
    env = os.environ | {
        "DJANGO_SETTINGS_MODULE": "tests.settings",
        "DATABASE_URL": f"sqlite:///{database}",
        "REDIS_URL": "",
        "PEFTLAB_JOB_HEARTBEAT_S": "0.2",
        "PEFTLAB_JOB_STALE_S": "2",
    }
    migrate = manage("migrate", "--no-input", "-v0", env=env)
    assert migrate.wait(timeout=300) == 0, migrate.stdout.read()

    # A process runs the job in-process (no Redis), as the web server's thread would.
    enqueue = (
        "from peftlab.jobs import job_enqueue; from peftlab.models import Job; "
        "job_enqueue(kind=Job.Kind.DATASET, func='tests.jobs.job_functions.resumable_counting_job', "
        f"kwargs={{'folder': {str(steps)!r}, 'steps': {STEPS}, 'step_s': 0.2}}, inline=True)"
    )
    runner = manage("shell", "-c", enqueue, env=env)
    wait_for(lambda: len(list(steps.glob("step*"))) >= 3, "the job's first steps")
    runner.send_signal(signal.SIGKILL)
    runner.wait(timeout=30)
    done_before_kill = len(list(steps.glob("step*")))
    assert done_before_kill < STEPS
    assert job_row(database)[0] == "running"  # nothing in the killed process could record its death

    # The scheduler's periodic reconcile notices the stale heartbeat and fails the job.
    reconciler = manage("jobs", "reconcile", "--every", "0.5", env=env)
    try:
        wait_for(lambda: job_row(database)[0] != "running", "reconcile to end the job")
    finally:
        reconciler.send_signal(signal.SIGTERM)
        reconciler.wait(timeout=30)
    status, error, _ = job_row(database)
    assert status == "failed" and "no heartbeat since" in error

    retry = manage("jobs", "retry", "1", env=env)
    output, _ = retry.communicate(timeout=300)
    assert retry.returncode == 0, output
    assert "job 2 retried job 1 in this process: finished." in output
    writers = [(steps / f"step{step:03d}").read_text(encoding="utf-8") for step in range(STEPS)]
    # The steps the killed job finished were kept; the retry did only the rest.
    assert writers[:done_before_kill] == ["1"] * done_before_kill
    assert writers[done_before_kill:] == ["2"] * (STEPS - done_before_kill)
