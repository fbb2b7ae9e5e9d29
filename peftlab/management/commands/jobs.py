"""List, reconcile, cancel or retry background jobs from the terminal."""

from typing import Any

from peftlab.commands import PeftlabCommand
from peftlab.errors import UserInputError
from peftlab.jobs import job_cancel, job_retry, jobs_reconcile
from peftlab.models import Job


class Command(PeftlabCommand):
    help = "jobs list | jobs reconcile | jobs cancel ID | jobs retry ID"

    def add_arguments(self, parser) -> None:
        parser.add_argument("action", choices=["list", "reconcile", "cancel", "retry"])
        parser.add_argument("job_id", nargs="?", type=int, help="The job's id (cancel and retry).")
        parser.add_argument("--limit", type=int, default=20, help="How many of the latest jobs to list.")

    def handle(self, *args: Any, action: str, job_id: int | None, limit: int, **options: Any) -> None:
        if action == "reconcile":
            self.stdout.write(f"{jobs_reconcile()} job(s) whose worker died marked failed or cancelled.")
            return
        if action == "list":
            jobs_reconcile()
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
        else:
            retry = job_retry(job=job)
            self.stdout.write(f"job {retry.pk} queued on {retry.queue!r}: retries job {job.pk}.")
