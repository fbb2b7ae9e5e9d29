"""A job's percent and ETA are the whole run's (epochs x steps), not the current stage's."""

import datetime

import pytest

from peftlab import jobs
from peftlab.jobs import JobProgress
from peftlab.models import Job
from peftlab.progress import Progress

pytestmark = pytest.mark.django_db
START = datetime.datetime(2026, 1, 1, 12, 0, tzinfo=datetime.UTC)


@pytest.fixture
def clock(monkeypatch):
    """A settable clock for both the rate (monotonic seconds) and the wall time the ETA is stamped from."""
    seconds = [0.0]
    monkeypatch.setattr(jobs.time, "monotonic", lambda: seconds[0])
    monkeypatch.setattr(jobs.timezone, "now", lambda: START + datetime.timedelta(seconds=seconds[0]))
    return seconds


def test_percent_is_the_runs_share_and_the_eta_follows_the_measured_rate(clock):
    job = Job.objects.create(kind=Job.Kind.TRAINING, func_path="x", status=Job.Status.RUNNING)
    progress = JobProgress(job, interval_s=0)
    clock[0] = 30.0  # model loading and caching: no step yet
    progress(Progress("epoch 1/40", 1, 4, overall=(0 + 1 / 4) / 40))
    job.refresh_from_db()
    assert job.percent == pytest.approx(100 * 0.25 / 40) and job.eta_at is None  # one point: no rate yet
    clock[0] = 30.0 + 12 * 12.75  # 12 s per epoch since the first step (a quarter into epoch 1)
    progress(Progress("epoch 13/40", 4, 4, overall=13 / 40))
    job.refresh_from_db()
    assert job.percent == pytest.approx(100 * 13 / 40)  # not the epoch's 100 %
    assert (job.stage, job.done, job.total) == ("epoch 13/40", 4, 4)
    assert (job.eta_at - START).total_seconds() == pytest.approx(clock[0] + 27 * 12)


def test_setup_stages_before_any_progress_do_not_slow_the_estimate(clock):
    job = Job.objects.create(kind=Job.Kind.GENERATION, func_path="x", status=Job.Status.RUNNING)
    progress = JobProgress(job, interval_s=0)
    progress(Progress("load model", 1, 1, overall=0.0))
    clock[0] = 100.0  # the effect check: still nothing rendered
    progress(Progress("effect check", 1, 1, overall=0.0))
    job.refresh_from_db()
    assert job.percent == 0.0  # not "load model 1/1" = 100 %
    clock[0] = 110.0
    progress(Progress("render base", 5, 10, overall=5 / 30))
    job.refresh_from_db()
    assert (job.eta_at - START).total_seconds() == pytest.approx(110.0 + 50.0)  # 10 s per 5 images


def test_a_job_without_a_whole_run_share_shows_its_stage(clock):
    job = Job.objects.create(kind=Job.Kind.DATASET, func_path="x", status=Job.Status.RUNNING)
    JobProgress(job, interval_s=0)(Progress("prepare", 3, 4))
    job.refresh_from_db()
    assert job.percent == 75.0 and job.eta_at is None
