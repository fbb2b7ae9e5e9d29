"""`manage.py jobs`: list, reconcile, cancel and retry from the terminal, with one-line errors."""

from datetime import timedelta

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone

from peftlab.models import Job

pytestmark = pytest.mark.django_db


def run(*args: str) -> str:
    from io import StringIO

    out = StringIO()
    call_command("jobs", *args, stdout=out)
    return out.getvalue()


@pytest.mark.django_db(transaction=True)  # autocommit, as in a terminal: the retry starts at once
def test_list_cancel_and_retry_in_this_process(no_redis, tmp_path):
    job = Job.objects.create(
        kind=Job.Kind.DATASET,
        func_path="tests.jobs.job_functions.resumable_counting_job",
        kwargs={"folder": str(tmp_path), "steps": 2},
    )
    assert f"{job.pk}  dataset    queued" in run("list")
    assert "cancelled" in run("cancel", str(job.pk))
    output = run("retry", str(job.pk))
    retry = Job.objects.get(retry_of=job)
    assert f"job {retry.pk} retried job {job.pk} in this process: finished." in output
    assert (tmp_path / "step001").read_text(encoding="utf-8") == str(retry.pk)


def test_reconcile_fails_a_job_whose_process_died(no_redis):
    job = Job.objects.create(
        kind=Job.Kind.DATASET,
        func_path="tests.jobs.job_functions.resumable_counting_job",
        status=Job.Status.RUNNING,
        heartbeat_at=timezone.now() - timedelta(seconds=30),
    )
    assert "0 job(s)" in run("reconcile")  # within the default threshold (60 s)
    assert "1 job(s) whose process or worker died" in run("reconcile", "--stale-after", "10")
    job.refresh_from_db()
    assert job.status == Job.Status.FAILED


def test_a_failed_retry_exits_non_zero(no_redis, transactional_db):
    job = Job.objects.create(
        kind=Job.Kind.DATASET, func_path="trainer.jobs.dataset_prepare_job", status=Job.Status.FAILED
    )
    with pytest.raises(CommandError, match=f"retry of job {job.pk}\\) failed: KeyError: 'source'"):
        run("retry", str(job.pk))


def test_errors_are_one_line(no_redis):
    with pytest.raises(CommandError, match="needs a job id"):
        run("cancel")
    with pytest.raises(CommandError, match="there is no job 999"):
        run("retry", "999")
    with pytest.raises(CommandError, match="must be positive seconds"):
        run("reconcile", "--stale-after", "0")
    with pytest.raises(CommandError, match="--every must be positive"):
        run("reconcile", "--every", "-1")
