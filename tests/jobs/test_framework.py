"""The job framework against the real Redis with RQ's SimpleWorker, and in-process without Redis."""

import time

import django_rq
import pytest
from rq import SimpleWorker
from rq.job import Job as RqJob
from rq.job import JobStatus
from rq.registry import StartedJobRegistry

from peftlab.errors import UserInputError
from peftlab.jobs import job_cancel, job_enqueue, job_execute, job_retry, jobs_reconcile
from peftlab.models import Job
from trainer.jobs import dataset_prepare_job
from trainer.models import Dataset

pytestmark = pytest.mark.django_db


def prepare_kwargs(images_dir, tmp_path) -> dict:
    return {"source": str(images_dir), "output": str(tmp_path / "prepared"), "resolution": 32, "min_size": 0}


def work(*queue_names: str) -> None:
    """Run every queued job to the end in this process, as `rqworker --burst` would."""
    queues = [django_rq.get_queue(name) for name in queue_names]
    SimpleWorker(queues, connection=queues[0].connection).work(burst=True)


def test_job_is_enqueued_on_commit_and_runs_to_finished_with_progress(
    rq_settings, images_dir, tmp_path, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        job = job_enqueue(
            kind=Job.Kind.DATASET, func=dataset_prepare_job, kwargs=prepare_kwargs(images_dir, tmp_path)
        )
        # Nothing reaches Redis before the transaction commits.
        assert django_rq.get_queue("default").count == 0
    for callback in callbacks:
        callback()
    assert django_rq.get_queue("default").job_ids == [job.rq_job_id]
    job.refresh_from_db()
    assert job.status == Job.Status.QUEUED and job.enqueued_at is not None

    work("default")

    job.refresh_from_db()
    assert job.status == Job.Status.FINISHED, job.error
    assert job.percent == 100.0 and job.stage == "prepare" and job.total == 4
    assert "[prepare] image" in job.log
    assert job.started_at <= job.finished_at
    assert Dataset.objects.get(path=str((tmp_path / "prepared").resolve())).num_pairs == 4
    assert RqJob.fetch(job.rq_job_id, connection=django_rq.get_connection("default")).get_status() == (
        JobStatus.FINISHED
    )


def test_failing_job_records_its_full_error(rq_settings, tmp_path, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        job = job_enqueue(
            kind=Job.Kind.DATASET,
            func=dataset_prepare_job,
            kwargs={"source": str(tmp_path / "missing"), "output": str(tmp_path / "out"), "resolution": 32},
        )
    work("default")
    job.refresh_from_db()
    assert job.status == Job.Status.FAILED
    assert "Traceback" in job.error and "UserInputError" in job.error and "missing" in job.error
    rq_job = RqJob.fetch(job.rq_job_id, connection=django_rq.get_connection("default"))
    assert rq_job.get_status() == JobStatus.FAILED


def test_cancelling_a_queued_job_removes_it_from_the_queue(
    rq_settings, images_dir, tmp_path, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        job = job_enqueue(
            kind=Job.Kind.DATASET, func=dataset_prepare_job, kwargs=prepare_kwargs(images_dir, tmp_path)
        )
    job_cancel(job=job)
    job.refresh_from_db()
    assert job.status == Job.Status.CANCELLED
    assert django_rq.get_queue("default").count == 0
    work("default")
    assert not (tmp_path / "prepared").exists()
    with pytest.raises(UserInputError, match="only queued or running"):
        job_cancel(job=job)


def slow_counting_job(*, job, progress) -> None:
    """A job that reports progress for a while: long enough to be cancelled while running."""
    from peftlab.progress import Progress

    for step in range(200):
        if step == 3:
            Job.objects.filter(pk=job.pk).update(cancel_requested=True)  # as job_cancel does from the console
        progress(Progress("count", step, 200))
        time.sleep(0.01)


def test_cancelling_a_running_job_stops_it_at_the_next_progress_report(
    rq_settings, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        job = job_enqueue(kind=Job.Kind.DATASET, func=slow_counting_job)
    work("default")
    job.refresh_from_db()
    assert job.status == Job.Status.CANCELLED
    assert job.done < 199


def test_killed_worker_leaves_the_job_failed_and_a_retry_succeeds(
    rq_settings, images_dir, tmp_path, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        job = job_enqueue(
            kind=Job.Kind.DATASET, func=dataset_prepare_job, kwargs=prepare_kwargs(images_dir, tmp_path)
        )
    queue = django_rq.get_queue("default")
    # A worker takes the job and starts it, then dies (SIGKILL): its heartbeat is never renewed.
    worker = SimpleWorker([queue], connection=queue.connection)
    worker.register_birth()
    rq_job, _ = queue.dequeue_any([queue], timeout=None, connection=queue.connection)
    worker.prepare_execution(rq_job)
    worker.prepare_job_execution(rq_job)
    Job.objects.filter(pk=job.pk).update(status=Job.Status.RUNNING)
    registry = StartedJobRegistry(queue=queue)
    assert rq_job.id in registry.get_job_ids(cleanup=False)

    assert jobs_reconcile() == 0  # the heartbeat has not expired yet: still running
    # Expire the heartbeat, as time passing after the kill would.
    (entry,) = queue.connection.zrange(registry.key, 0, -1)
    queue.connection.zadd(registry.key, {entry: 1}, xx=True)
    assert jobs_reconcile() == 1

    job.refresh_from_db()
    assert job.status == Job.Status.FAILED
    assert "worker running this job stopped" in job.error and "AbandonedJobError" in job.error
    assert rq_job.get_status() == JobStatus.FAILED

    with django_capture_on_commit_callbacks(execute=True):
        retry = job_retry(job=job)
    assert retry.retry_of == job and retry.kwargs == job.kwargs
    work("default")
    retry.refresh_from_db()
    assert retry.status == Job.Status.FINISHED, retry.error
    with pytest.raises(UserInputError, match="only failed or cancelled"):
        job_retry(job=retry)


def test_inline_mode_without_redis_records_progress(no_redis, images_dir, tmp_path, caplog):
    with caplog.at_level("INFO", logger="peftlab"):
        job = job_enqueue(
            kind=Job.Kind.DATASET,
            func=dataset_prepare_job,
            kwargs=prepare_kwargs(images_dir, tmp_path),
            inline=True,
        )
        job.refresh_from_db()
        assert job.status == Job.Status.QUEUED  # the test's transaction has not committed
        job = job_execute(job_id=job.pk)
    assert job.status == Job.Status.FINISHED and job.percent == 100.0 and job.rq_job_id == ""
    assert jobs_reconcile() == 0


@pytest.mark.django_db(transaction=True)
def test_thread_mode_without_redis_runs_in_the_background(no_redis, images_dir, tmp_path, caplog):
    with caplog.at_level("INFO", logger="peftlab"):
        job = job_enqueue(
            kind=Job.Kind.DATASET, func=dataset_prepare_job, kwargs=prepare_kwargs(images_dir, tmp_path)
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            job.refresh_from_db()
            if not job.is_active:
                break
            time.sleep(0.1)
    assert job.status == Job.Status.FINISHED, job.error
    assert job.total == 4 and job.percent == 100.0
    assert "REDIS_URL is unset" in caplog.text and "background thread" in caplog.text


def test_unknown_queue_and_function_are_refused(rq_settings):
    with pytest.raises(UserInputError, match="unknown queue"):
        job_enqueue(kind=Job.Kind.DATASET, func=dataset_prepare_job, queue="cpu")
    with pytest.raises(ImportError):
        job_enqueue(kind=Job.Kind.DATASET, func="trainer.jobs.no_such_job")
    assert not Job.objects.exists()
