"""Small job functions for the job tests; a subprocess imports them by dotted path, as a worker would."""

import time
from datetime import timedelta
from pathlib import Path

from django.utils import timezone

from peftlab.files import write_atomic
from peftlab.jobs import job_cancel, jobs_reconcile
from peftlab.models import Job
from peftlab.progress import Progress


def resumable_counting_job(*, job: Job, progress) -> None:
    """Count to kwargs["steps"], one marker file per step in kwargs["folder"]; a retry skips finished steps."""
    folder, steps = Path(job.kwargs["folder"]), job.kwargs["steps"]
    for step in range(steps):
        marker = folder / f"step{step:03d}"
        if not marker.exists():
            time.sleep(job.kwargs.get("step_s", 0.0))
            # Renamed into place: a kill mid-write must not leave an empty marker that skips the step.
            write_atomic(marker, lambda temporary: temporary.write_text(str(job.pk), encoding="utf-8"))
        progress(Progress("count", step + 1, steps))


def quiet_job(*, job: Job, progress) -> None:
    """Work for kwargs["seconds"] without reporting progress, as a long model load does."""
    time.sleep(job.kwargs["seconds"])


def self_cancelling_job(*, job: Job, progress) -> None:
    """Report progress for a while and ask (through the real cancel) to be stopped at step 3."""
    for step in range(200):
        if step == 3:
            job_cancel(job=job)
        progress(Progress("count", step, 200))
        time.sleep(0.01)


def stalled_then_reconciled_job(*, job: Job, progress) -> None:
    """Report progress; at step 3 look dead (heartbeat stalled for minutes) and be reconciled meanwhile."""
    for step in range(200):
        if step == 3:
            Job.objects.filter(pk=job.pk).update(heartbeat_at=timezone.now() - timedelta(minutes=5))
            jobs_reconcile(stale_after_s=60)
        progress(Progress("count", step, 200))
        time.sleep(0.01)
