"""`manage.py jobs`: list, reconcile, cancel and retry from the terminal, with one-line errors."""

import pytest
from django.core.management import CommandError, call_command

from peftlab.models import Job

pytestmark = pytest.mark.django_db


def run(*args: str) -> str:
    from io import StringIO

    out = StringIO()
    call_command("jobs", *args, stdout=out)
    return out.getvalue()


def test_list_cancel_and_retry(settings, django_capture_on_commit_callbacks):
    settings.REDIS_URL = ""
    job = Job.objects.create(kind=Job.Kind.DATASET, func_path="trainer.jobs.dataset_prepare_job")
    assert f"{job.pk}  dataset    queued" in run("list")
    assert "cancelled" in run("cancel", str(job.pk))
    with django_capture_on_commit_callbacks(execute=False):
        assert f"retries job {job.pk}" in run("retry", str(job.pk))
    assert Job.objects.filter(retry_of=job).count() == 1
    assert "0 job(s)" in run("reconcile")


def test_errors_are_one_line(settings):
    settings.REDIS_URL = ""
    with pytest.raises(CommandError, match="needs a job id"):
        run("cancel")
    with pytest.raises(CommandError, match="there is no job 999"):
        run("retry", "999")
