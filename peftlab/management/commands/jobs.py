"""List, reconcile, cancel or retry background jobs from the terminal."""

import time
from typing import Any

from peftlab.commands import PeftlabCommand
from peftlab.errors import UserInputError
from peftlab.jobs import job_cancel, job_retry, jobs_reconcile, redis_enabled
from peftlab.models import Job


class Command(PeftlabCommand):
    help = "jobs list | jobs reconcile [--every S] | jobs cancel ID | jobs retry ID"

    def add_arguments(self, parser) -> None:
        parser.add_argument("action", choices=["list", "reconcile", "cancel", "retry"])
        parser.add_argument("job_id", nargs="?", type=int, help="The job's id (cancel and retry).")
        parser.add_argument("--limit", type=int, default=20, help="How many of the latest jobs to list.")
        parser.add_argument(
            "--stale-after",
            type=float,
            default=None,
            help="reconcile: seconds without a heartbeat after which an in-process job counts as dead "
            "(default PEFTLAB_JOB_STALE_S).",
        )
        parser.add_argument(
            "--every",
            type=float,
            default=None,
            help="reconcile: keep running and reconcile every this many seconds (a scheduler of its own).",
        )

    def handle(
        self,
        *args: Any,
        action: str,
        job_id: int | None,
        limit: int,
        stale_after: float | None,
        every: float | None,
        **options: Any,
    ) -> None:
        if action == "reconcile":
            self.reconcile(stale_after, every)
            return
        if action == "list":
            for job in Job.objects.all()[:limit]:
                self.stdout.write(
                    f"{job.pk:>5}  {job.kind:<10} {job.status:<9} {job.percent:5.1f}%  {job.stage} {job.queue}"
                )
            return
        if job_id is None:
            raise UserInputError(f"jobs {action} needs a job id: python manage.py jobs {action} ID.")
        job = Job.objects.filter(pk=job_id).first()
        if job is None:
            raise UserInputError(f"there is no job {job_id}: see python manage.py jobs list.")
        if action == "cancel":
            job = job_cancel(job=job)
            self.stdout.write(f"job {job.pk}: {job.status}, cancel requested.")
        elif redis_enabled():
            retry = job_retry(job=job)
            self.stdout.write(f"job {retry.pk} queued on {retry.queue!r}: retries job {job.pk}.")
        else:
            # Without Redis a background thread would die with this command: run the retry here.
            retry = job_retry(job=job, inline=True)
            retry.refresh_from_db()
            if retry.status == Job.Status.FAILED:
                last_line = retry.error.strip().splitlines()[-1] if retry.error.strip() else "no error text"
                raise UserInputError(f"job {retry.pk} (retry of job {job.pk}) failed: {last_line}")
            self.stdout.write(f"job {retry.pk} retried job {job.pk} in this process: {retry.status}.")

    def reconcile(self, stale_after: float | None, every: float | None) -> None:
        """Reconcile once, or every `every` seconds until stopped."""
        if every is not None and every <= 0:
            raise UserInputError(f"--every must be positive seconds, not {every:g}.")
        while True:
            changed = jobs_reconcile(stale_after_s=stale_after)
            if every is None or changed:
                self.stdout.write(
                    f"{changed} job(s) whose process or worker died marked failed or cancelled."
                )
                self.stdout.flush()
            if every is None:
                return
            time.sleep(every)
