"""Background jobs: enqueue on commit, run with a progress reporter, cancel, reconcile and retry.

A `Job` row is the source of truth. With REDIS_URL set, jobs go to django-rq's queues and run in
`manage.py rqworker gpu default`; without it they run in-process in a background thread (or inline).
Either way `job_execute` runs the job function `func(*, job, progress)` and records what happened.
An in-process job stamps a heartbeat on its row; `jobs_reconcile` fails a job whose process died (its
heartbeat, or RQ's, went stale), so that `job_retry` can run it again.
"""

from __future__ import annotations

import logging
import threading
import time
import traceback
import uuid
from collections import deque
from collections.abc import Callable
from contextlib import nullcontext
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.contrib.contenttypes.models import ContentType
from django.db import DatabaseError, connection, models, transaction
from django.db.models.functions import Coalesce
from django.utils import timezone
from django.utils.module_loading import import_string

from peftlab.errors import UserInputError
from peftlab.models import Job
from peftlab.progress import Progress

logger = logging.getLogger(__name__)

GPU_QUEUE = "gpu"
DEFAULT_QUEUE = "default"
LOG_LINES = 50  # how many of the latest reported lines a job row keeps
REPORT_INTERVAL_S = 0.5  # the reporter writes at most this often, and on every stage change
RESULT_TTL_S = 7 * 24 * 3600  # how long Redis keeps a job's record after it ended, for the dashboard

JobFunction = Callable[..., None]


class JobCancelled(Exception):
    """Raised by the progress reporter when the running job was cancelled (or ended by reconcile)."""


class JobFailed(Exception):
    """Raised to RQ when the job function failed, so RQ's registries agree with the row."""


def redis_enabled() -> bool:
    """Whether jobs go to Redis (REDIS_URL set) or run in-process."""
    return bool(settings.REDIS_URL)


def rq_queue(name: str):
    """The django-rq queue `name`, enqueueing immediately (the caller already waits for the commit)."""
    import django_rq

    return django_rq.get_queue(name, commit_mode="auto")


class JobProgress:
    """A ProgressCallback that writes a job's progress to its row, throttled, and honours cancel requests."""

    def __init__(self, job: Job, interval_s: float = REPORT_INTERVAL_S) -> None:
        self.job_id = job.pk
        self.interval_s = interval_s
        self.lines: deque[str] = deque(job.log.splitlines(), maxlen=LOG_LINES)
        self._stage: str | None = None
        self._last_write = 0.0
        self._overall: float | None = None
        self._origin: tuple[float, float] | None = None  # (monotonic time, overall) of the first overall report
        self._eta_at: datetime | None = None

    def _estimate(self, overall: float, now: float) -> None:
        """Keep the whole-run fraction and the ETA at the rate measured since the first such report."""
        self._overall = min(1.0, max(0.0, overall))
        if self._origin is None or self._overall <= self._origin[1]:
            # Measured from the last report before any progress: loading a model says nothing of the rate.
            self._origin = (now, self._overall)
            return
        started, start_fraction = self._origin
        if self._overall > start_fraction and now > started:
            rate = (self._overall - start_fraction) / (now - started)
            remaining = timedelta(seconds=(1.0 - self._overall) / rate)
            self._eta_at = timezone.now() + remaining

    def __call__(self, report: Progress) -> None:
        if report.message:
            self.lines.append(f"[{report.stage}] {report.message}")
        now = time.monotonic()
        if report.overall is not None:
            self._estimate(report.overall, now)
        stage_changed = report.stage != self._stage
        stage_done = report.total is not None and report.done >= report.total
        if not (stage_changed or stage_done or now - self._last_write >= self.interval_s):
            return
        self._stage = report.stage
        self._last_write = now
        if self._overall is not None:  # the whole run's share, once the engine has said it
            percent = 100.0 * self._overall
        else:
            percent = min(100.0, 100.0 * report.done / report.total) if report.total else 0.0
        Job.objects.filter(pk=self.job_id).update(
            stage=report.stage[:100],
            done=max(0, report.done),
            total=report.total,
            percent=percent,
            eta_at=self._eta_at,
            metrics={key: float(value) for key, value in report.metrics.items()},
            log="\n".join(self.lines),
            updated_at=timezone.now(),
        )
        # A job ended by reconcile (its process seemed dead) stops too: its retry may already be running.
        state = Job.objects.filter(pk=self.job_id).values_list("status", "cancel_requested").first()
        if state != (Job.Status.RUNNING, False):
            raise JobCancelled(f"job {self.job_id} was cancelled or ended by reconcile")


class Heartbeat:
    """Stamps a job's `heartbeat_at` every `interval_s` from a daemon thread while the job runs here."""

    def __init__(self, job_id: int, interval_s: float) -> None:
        self.job_id = job_id
        self.interval_s = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"peftlab-heartbeat-{job_id}", daemon=True)

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        try:
            while not self._stop.wait(self.interval_s):
                try:
                    Job.objects.filter(pk=self.job_id).update(heartbeat_at=timezone.now())
                except DatabaseError as error:  # a busy database: the next beat tries again
                    logger.warning("job %s: heartbeat not written: %s", self.job_id, error)
        finally:
            connection.close()


def _run_content_type(run: models.Model | None) -> tuple[ContentType | None, int | None]:
    if run is None:
        return None, None
    return ContentType.objects.get_for_model(run), run.pk


def job_enqueue(
    *,
    kind: str,
    func: JobFunction | str,
    run: models.Model | None = None,
    kwargs: dict[str, Any] | None = None,
    queue: str = DEFAULT_QUEUE,
    inline: bool = False,
    retry_of: Job | None = None,
) -> Job:
    """Record a queued job and start it once the current transaction commits (Redis, thread or inline)."""
    func_path = func if isinstance(func, str) else f"{func.__module__}.{func.__qualname__}"
    import_string(func_path)  # fail now, not in a worker, if the path is wrong
    if queue not in settings.RQ_QUEUES:
        raise UserInputError(f"unknown queue {queue!r}: use one of {', '.join(settings.RQ_QUEUES)}.")
    content_type, object_id = _run_content_type(run)
    job = Job(
        kind=kind,
        func_path=func_path,
        kwargs=kwargs or {},
        queue=queue,
        content_type=content_type,
        object_id=object_id,
        retry_of=retry_of,
        rq_job_id=str(uuid.uuid4()) if redis_enabled() and not inline else "",
    )
    job.full_clean()
    job.save()
    transaction.on_commit(lambda: _start(job.pk, inline=inline))
    return job


def _start(job_id: int, *, inline: bool) -> None:
    """Hand a committed job to Redis, a background thread, or run it here."""
    from redis.exceptions import RedisError

    job = Job.objects.get(pk=job_id)
    Job.objects.filter(pk=job.pk).update(enqueued_at=timezone.now())
    if inline:
        logger.info("job %s (%s) runs inline in this process", job.pk, job.kind)
        job_execute(job_id=job.pk)
    elif job.rq_job_id:
        try:
            rq_queue(job.queue).enqueue(
                job_run,
                job.pk,
                job_id=job.rq_job_id,
                job_timeout=settings.RQ_QUEUES[job.queue].get("DEFAULT_TIMEOUT"),
                result_ttl=RESULT_TTL_S,
                failure_ttl=RESULT_TTL_S,
                description=f"peftlab {job.kind} job {job.pk}",
            )
        except RedisError as error:
            logger.error("job %s could not be enqueued: %s", job.pk, error)
            _finish(job, Job.Status.FAILED, error=f"Could not reach Redis at REDIS_URL to enqueue: {error}")
            return
        logger.info(
            "job %s (%s) enqueued on queue %r as rq job %s", job.pk, job.kind, job.queue, job.rq_job_id
        )
    else:
        logger.info(
            "REDIS_URL is unset: job %s (%s) runs in-process in a background thread", job.pk, job.kind
        )
        threading.Thread(
            target=_thread_main, args=(job.pk,), name=f"peftlab-job-{job.pk}", daemon=True
        ).start()


def _thread_main(job_id: int) -> None:
    """Run a job in a background thread with its own database connection."""
    try:
        job_execute(job_id=job_id)
    finally:
        connection.close()


def job_run(job_id: int) -> None:
    """The function RQ runs: execute the job, and fail the RQ job too if the job failed."""
    job = job_execute(job_id=job_id)
    if job.status == Job.Status.FAILED:
        raise JobFailed(job.error.strip().splitlines()[-1] if job.error.strip() else "job failed")


def _finish(job: Job, status: str, **fields: Any) -> None:
    """End an active job; a job already ended (e.g. by reconcile) keeps its status."""
    Job.objects.filter(pk=job.pk, status__in=[Job.Status.QUEUED, Job.Status.RUNNING]).update(
        status=status, finished_at=timezone.now(), **fields
    )


def job_execute(*, job_id: int) -> Job:
    """Run a job's function with a progress reporter and record running, finished, failed or cancelled."""
    job = Job.objects.get(pk=job_id)
    if job.status != Job.Status.QUEUED:
        logger.warning("job %s is %s, not queued: not running it", job.pk, job.status)
        return job
    if job.cancel_requested:
        _finish(job, Job.Status.CANCELLED)
        return Job.objects.get(pk=job.pk)
    now = timezone.now()
    Job.objects.filter(pk=job.pk).update(status=Job.Status.RUNNING, started_at=now, heartbeat_at=now)
    job.refresh_from_db()
    reporter = JobProgress(job)
    # RQ's worker keeps a heartbeat of its own; an in-process job's row is the only sign its process lives.
    heartbeat = nullcontext() if job.rq_job_id else Heartbeat(job.pk, settings.PEFTLAB_JOB_HEARTBEAT_S)
    try:
        with heartbeat:
            import_string(job.func_path)(job=job, progress=reporter)
    except JobCancelled:
        logger.info("job %s cancelled", job.pk)
        _finish(job, Job.Status.CANCELLED)
    except Exception:
        logger.exception("job %s failed", job.pk)
        _finish(job, Job.Status.FAILED, error=traceback.format_exc())
    else:
        _finish(job, Job.Status.FINISHED, percent=100.0)
    job.refresh_from_db()
    return job


@transaction.atomic
def job_cancel(*, job: Job) -> Job:
    """Cancel a queued job (removed from its queue) or ask a running one to stop."""
    from rq.command import send_stop_job_command
    from rq.exceptions import InvalidJobOperation, NoSuchJobError
    from rq.job import Job as RqJob

    job = Job.objects.select_for_update().get(pk=job.pk)
    if not job.is_active:
        raise UserInputError(f"job {job.pk} is {job.status}: only queued or running jobs can be cancelled.")
    job.cancel_requested = True
    job.save(update_fields=["cancel_requested", "updated_at"])
    if job.rq_job_id:
        queue = rq_queue(job.queue)
        try:
            rq_job = RqJob.fetch(job.rq_job_id, connection=queue.connection)
            if job.status == Job.Status.QUEUED:
                rq_job.cancel()
            else:
                # A forking worker kills the work-horse; a SimpleWorker relies on the reporter raising.
                send_stop_job_command(queue.connection, job.rq_job_id)
        except (NoSuchJobError, InvalidJobOperation) as error:
            logger.info("job %s: rq job %s not cancellable in Redis (%s)", job.pk, job.rq_job_id, error)
    if job.status == Job.Status.QUEUED:
        job.status = Job.Status.CANCELLED
        job.finished_at = timezone.now()
        job.save(update_fields=["status", "finished_at", "updated_at"])
    return job


def _mark_run_failed(job: Job, error: str) -> None:
    """Mark the job's run failed too, when the run row tracks a status of its own."""
    run = job.run
    if run is None or not hasattr(run, "status") or run.status in ("finished", "failed"):
        return
    run.status = "failed"
    fields = ["status"]
    if hasattr(run, "error"):
        run.error = error
        fields.append("error")
    run.save(update_fields=fields)


def _end_dead_job(job: Job, error: str) -> bool:
    """End an active job whose process died: cancelled if someone asked, else failed with its run."""
    with transaction.atomic():
        job = Job.objects.select_for_update().get(pk=job.pk)
        if not job.is_active:
            return False  # it ended between the query and now
        if job.cancel_requested:
            _finish(job, Job.Status.CANCELLED)
        else:
            _finish(job, Job.Status.FAILED, error=error)
            _mark_run_failed(job, error)
    logger.warning("job %s: %s", job.pk, error)
    return True


def _reconcile_in_process(stale_after_s: float) -> int:
    """End the active in-process jobs whose heartbeat (or, before the first one, enqueue time) is stale."""
    cutoff = timezone.now() - timedelta(seconds=stale_after_s)
    stale = (
        Job.objects.filter(status__in=[Job.Status.QUEUED, Job.Status.RUNNING], rq_job_id="")
        .annotate(last_seen=Coalesce("heartbeat_at", "enqueued_at", "created_at"))
        .filter(last_seen__lt=cutoff)
    )
    return sum(
        _end_dead_job(
            job,
            f"The process running this job stopped before it ended: no heartbeat since "
            f"{job.last_seen:%Y-%m-%d %H:%M:%S %Z} (more than {stale_after_s:g} s).",
        )
        for job in stale
    )


def _reconcile_rq() -> int:
    """End the active RQ jobs whose RQ job died, e.g. with its worker."""
    from rq.exceptions import NoSuchJobError
    from rq.job import Job as RqJob
    from rq.job import JobStatus
    from rq.registry import StartedJobRegistry

    active = Job.objects.filter(
        status__in=[Job.Status.QUEUED, Job.Status.RUNNING], enqueued_at__isnull=False
    ).exclude(rq_job_id="")
    if not active.exists():
        return 0
    for name in set(active.values_list("queue", flat=True)):
        # Moves jobs whose worker stopped sending heartbeats (killed, machine lost) to the failed registry.
        StartedJobRegistry(queue=rq_queue(name)).cleanup()
    changed = 0
    for job in active:
        try:
            rq_job = RqJob.fetch(job.rq_job_id, connection=rq_queue(job.queue).connection)
            result = rq_job.latest_result()
            rq_status, rq_error = rq_job.get_status(), (result.exc_string or "") if result else ""
        except NoSuchJobError:
            rq_status, rq_error = None, "its record is gone from Redis"
        if rq_status not in (
            None,
            JobStatus.FAILED,
            JobStatus.STOPPED,
            JobStatus.CANCELED,
            JobStatus.FINISHED,
        ):
            continue
        status_text = rq_status.value if rq_status else "missing"
        changed += _end_dead_job(
            job, f"The worker running this job stopped before it ended (rq status {status_text}): {rq_error}"
        )
    return changed


def jobs_reconcile(*, stale_after_s: float | None = None) -> int:
    """End the active jobs whose process or worker died; return how many changed.

    In-process jobs count as dead when their heartbeat is older than `stale_after_s` (default
    PEFTLAB_JOB_STALE_S); RQ jobs when RQ says so. Called by `manage.py jobs reconcile`, never by a page.
    """
    if stale_after_s is None:
        stale_after_s = settings.PEFTLAB_JOB_STALE_S
    if stale_after_s <= 0:
        raise UserInputError(f"the heartbeat threshold must be positive seconds, not {stale_after_s:g}.")
    return _reconcile_in_process(stale_after_s) + (_reconcile_rq() if redis_enabled() else 0)


def job_retry(*, job: Job, inline: bool = False) -> Job:
    """Start a new job that does a failed or cancelled job's work again (resuming where it can)."""
    if job.status not in (Job.Status.FAILED, Job.Status.CANCELLED):
        raise UserInputError(f"job {job.pk} is {job.status}: only failed or cancelled jobs can be retried.")
    return job_enqueue(
        kind=job.kind,
        func=job.func_path,
        run=job.run,
        kwargs=job.kwargs,
        queue=job.queue,
        inline=inline,
        retry_of=job,
    )
