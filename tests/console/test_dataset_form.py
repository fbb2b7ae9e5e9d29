"""The dataset form validates input, enqueues a job, and the runs pages show it."""

import pytest
from django.urls import reverse
from PIL import Image

from peftlab.models import Job

pytestmark = pytest.mark.django_db


@pytest.fixture
def images_dir(tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    for index in range(3):
        Image.new("RGB", (64, 64), (80 * index, 20, 20)).save(folder / f"i{index}.png")
        (folder / f"i{index}.txt").write_text(f"ghiblivis {index}")
    return folder


def test_bad_input_is_rejected_with_a_message_and_no_job(staff_client, tmp_path):
    url = reverse("console:dataset_new")
    cases = [
        (
            {
                "source": str(tmp_path / "nope"),
                "name": "x",
                "resolution": 64,
                "val_fraction": 0.1,
                "min_size": 0,
            },
            "is not a folder",
        ),
        (
            {
                "source": str(tmp_path),
                "name": "has space",
                "resolution": 64,
                "val_fraction": 0.1,
                "min_size": 0,
            },
            "slug",
        ),
        (
            {"source": str(tmp_path), "name": "x", "resolution": 4, "val_fraction": 0.1, "min_size": 0},
            "greater than or equal to 8",
        ),
        (
            {"source": str(tmp_path), "name": "x", "resolution": 64, "val_fraction": 1.5, "min_size": 0},
            "less than or equal to 0.99",
        ),
        (
            {"source": str(tmp_path), "name": "x", "resolution": "big", "val_fraction": 0.1, "min_size": 0},
            "whole number",
        ),
    ]
    for data, message in cases:
        response = staff_client.post(url, data)
        assert response.status_code == 200
        assert message in response.content.decode(), (data, message)
    assert not Job.objects.exists()


def test_valid_form_enqueues_a_job_that_runs_and_shows_progress(
    staff_client, images_dir, settings, tmp_path, django_capture_on_commit_callbacks
):
    settings.REDIS_URL = ""
    settings.PEFTLAB_DATA_DIR = tmp_path / "data"
    data = {"source": str(images_dir), "name": "tiny", "resolution": 32, "val_fraction": 0.0, "min_size": 0}
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        response = staff_client.post(reverse("console:dataset_new"), data)
    job = Job.objects.get()
    assert response.status_code == 302 and response["Location"] == reverse(
        "console:job_detail", args=[job.pk]
    )
    assert job.kind == Job.Kind.DATASET and job.queue == "default" and job.status == Job.Status.QUEUED
    assert job.kwargs["output"] == str(tmp_path / "data" / "datasets" / "tiny")
    assert len(callbacks) == 1  # the job starts only when the request's transaction commits

    from peftlab.jobs import job_execute

    job_execute(job_id=job.pk)
    page = staff_client.get(reverse("console:runs")).content.decode()
    assert f'data-job="{job.pk}"' in page and "finished" in page
    listing = staff_client.get(reverse("console:runs_json")).json()
    assert listing["jobs"][0] == {
        "id": job.pk,
        "kind": "dataset",
        "status": "finished",
        "percent": 100.0,
        "stage": "prepare",
        "done": 3,
        "total": 3,
        "metrics": {},
        "active": False,
        "eta_at": None,
        "eta": "",
    }
    detail = staff_client.get(reverse("console:job_detail", args=[job.pk])).content.decode()
    assert "finished" in detail and "[prepare] i2.png" in detail


def test_failed_job_shows_its_full_error_and_can_be_retried(
    staff_client, settings, django_capture_on_commit_callbacks
):
    settings.REDIS_URL = ""
    job = Job.objects.create(
        kind=Job.Kind.DATASET,
        func_path="trainer.jobs.dataset_prepare_job",
        kwargs={"source": "/nowhere", "output": "/tmp/x"},
        status=Job.Status.FAILED,
        error="Traceback (most recent call last):\n  ...\nUserInputError: source /nowhere is not a folder",
    )
    detail = staff_client.get(reverse("console:job_detail", args=[job.pk])).content.decode()
    assert "Traceback (most recent call last):" in detail and "/nowhere is not a folder" in detail
    with django_capture_on_commit_callbacks(execute=False):
        response = staff_client.post(reverse("console:job_retry", args=[job.pk]))
    retry = Job.objects.get(retry_of=job)
    assert response["Location"] == reverse("console:job_detail", args=[retry.pk])
    # A finished or queued job cannot be retried; the page says so instead of failing.
    response = staff_client.post(reverse("console:job_retry", args=[retry.pk]), follow=True)
    assert "only failed or cancelled jobs can be retried" in response.content.decode()
