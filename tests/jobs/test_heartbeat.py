"""In-process jobs without Redis: heartbeats, reconcile of dead ones, retry, and cancel."""

import time
from datetime import timedelta

import pytest
from django.utils import timezone

from generation.models import GenerationRun, PromptSet
from peftlab.errors import UserInputError
from peftlab.jobs import job_enqueue, job_execute, job_retry, jobs_reconcile
from peftlab.models import Job
from tests.jobs.job_functions import (
    quiet_job,
    self_cancelling_job,
    stalled_then_reconciled_job,
)

pytestmark = pytest.mark.django_db


def wait_until(predicate, timeout_s: float = 30.0) -> None:
    """Poll `predicate` until it holds (or fail after timeout_s, so a hang fails instead of blocking CI)."""
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.02)


def running_in_process_job(*, seen_s_ago: float, **fields) -> Job:
    """A job row as a process that started it leaves it: running, its heartbeat seen_s_ago seconds old."""
    return Job.objects.create(
        kind=Job.Kind.DATASET,
        func_path="tests.jobs.job_functions.resumable_counting_job",
        status=Job.Status.RUNNING,
        heartbeat_at=timezone.now() - timedelta(seconds=seen_s_ago),
        **fields,
    )


@pytest.mark.django_db(transaction=True)
def test_a_running_in_process_job_keeps_its_heartbeat_fresh_and_is_never_reconciled(no_redis, settings):
    settings.PEFTLAB_JOB_HEARTBEAT_S = 0.05
    job = job_enqueue(kind=Job.Kind.DATASET, func=quiet_job, kwargs={"seconds": 1.5})  # a thread
    wait_until(lambda: Job.objects.get(pk=job.pk).status == Job.Status.RUNNING)
    # It reports no progress for 1.5 s, three times the threshold: only its heartbeat shows it lives.
    while Job.objects.get(pk=job.pk).is_active:
        assert jobs_reconcile(stale_after_s=0.5) == 0
        time.sleep(0.1)
    job.refresh_from_db()
    assert job.status == Job.Status.FINISHED, job.error
    assert job.heartbeat_at > job.started_at + timedelta(seconds=1)


def test_reconcile_ends_in_process_jobs_whose_heartbeat_is_stale(no_redis):
    prompt_set = PromptSet.objects.create(name="p")
    run = GenerationRun.objects.create(prompt_set=prompt_set, status=GenerationRun.Status.RUNNING)
    dead = running_in_process_job(seen_s_ago=120, run=run)
    cancelled = running_in_process_job(seen_s_ago=120, cancel_requested=True)
    alive = running_in_process_job(seen_s_ago=5)
    never_started = Job.objects.create(kind=Job.Kind.DATASET, func_path="x.y")
    Job.objects.filter(pk=never_started.pk).update(created_at=timezone.now() - timedelta(seconds=120))

    assert jobs_reconcile(stale_after_s=60) == 3

    statuses = {job.pk: job.status for job in Job.objects.all()}
    assert statuses == {
        dead.pk: Job.Status.FAILED,
        cancelled.pk: Job.Status.CANCELLED,
        alive.pk: Job.Status.RUNNING,
        never_started.pk: Job.Status.FAILED,
    }
    dead.refresh_from_db()
    run.refresh_from_db()
    assert "no heartbeat since" in dead.error and dead.finished_at is not None
    assert run.status == GenerationRun.Status.FAILED and "no heartbeat since" in run.error
    assert jobs_reconcile(stale_after_s=60) == 0  # ended jobs stay ended


def test_a_reconciled_job_is_retried_and_resumes(no_redis, tmp_path, settings):
    settings.PEFTLAB_JOB_STALE_S = 60
    (tmp_path / "step000").write_text("done before the process died", encoding="utf-8")
    dead = running_in_process_job(seen_s_ago=120, kwargs={"folder": str(tmp_path), "steps": 3})
    with pytest.raises(UserInputError, match="only failed or cancelled"):
        job_retry(job=dead)  # still looks running until reconciled
    assert jobs_reconcile() == 1
    dead.refresh_from_db()

    retry = job_retry(job=dead, inline=True)
    retry = job_execute(job_id=retry.pk)  # the test's transaction holds on_commit back
    assert retry.status == Job.Status.FINISHED and retry.retry_of == dead
    assert (tmp_path / "step000").read_text(encoding="utf-8") == "done before the process died"
    assert (tmp_path / "step002").read_text(encoding="utf-8") == str(retry.pk)


def test_the_heartbeat_threshold_must_be_positive(no_redis):
    with pytest.raises(UserInputError, match="must be positive"):
        jobs_reconcile(stale_after_s=0)


def test_cancel_stops_an_in_process_job_at_its_next_progress_report(no_redis):
    job = job_enqueue(kind=Job.Kind.DATASET, func=self_cancelling_job, inline=True)
    job = job_execute(job_id=job.pk)
    assert job.status == Job.Status.CANCELLED
    assert 3 <= job.done < 199


def test_a_job_reconciled_as_dead_stops_at_its_next_report_and_stays_failed(no_redis):
    job = job_enqueue(kind=Job.Kind.DATASET, func=stalled_then_reconciled_job, inline=True)
    job = job_execute(job_id=job.pk)
    assert job.status == Job.Status.FAILED and "no heartbeat since" in job.error
    assert job.done < 199  # it stopped instead of finishing alongside a retry
