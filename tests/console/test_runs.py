"""The runs page lists every training and generation run, however started, with its job's progress and links;
a training run's page shows its metrics, its loss.png and full error; the studies page links onward."""

import io
import zipfile
from datetime import timedelta
from pathlib import Path

import pytest
from django.contrib.contenttypes.models import ContentType
from django.urls import reverse
from django.utils import timezone
from PIL import Image

from generation.models import GenerationRun, PromptSet
from peftlab.jobs import jobs_reconcile
from peftlab.models import Job
from studies.models import Participant, Study
from trainer.models import EpochMetric, TrainingRun

pytestmark = pytest.mark.django_db

TRACEBACK = 'Traceback (most recent call last):\n  File "trainer/engine/train.py", line 9\nRuntimeError: CUDA out of memory'


def hours_ago(run, hours: int):
    """Backdate a run so the list's order is unambiguous."""
    type(run).objects.filter(pk=run.pk).update(created_at=timezone.now() - timedelta(hours=hours))


@pytest.fixture
def training(tmp_path) -> TrainingRun:
    """A finished LoRA run recorded as `train_lora` records one (no job), with two epochs and its loss.png."""
    output = tmp_path / "runs" / "lora1"
    output.mkdir(parents=True)
    Image.new("RGB", (60, 40), (255, 255, 255)).save(output / "loss.png")
    run = TrainingRun.objects.create(
        method="lora",
        dataset_path=str(tmp_path / "d"),
        output_path=str(tmp_path / "runs" / "lora1"),
        config={"method": "lora", "epochs": 2, "rank": 4},
        status="finished",
        best_epoch=2,
        best_val_loss=0.1234,
        files={"adapter": str(output / "adapter"), "loss.png": str(output / "loss.png")},
    )
    EpochMetric.objects.create(
        run=run, epoch=1, train_loss=0.3, val_loss=0.25, seconds=1.5, samples_per_s=2.0
    )
    EpochMetric.objects.create(
        run=run, epoch=2, train_loss=0.2, val_loss=0.1234, seconds=1.5, samples_per_s=2.0
    )
    hours_ago(run, 3)
    return run


@pytest.fixture
def generation(training) -> GenerationRun:
    """A finished render that loaded the training run's adapter (as `make demo` does), with a study."""
    run = GenerationRun.objects.create(
        name="demo render",
        status="finished",
        prompt_set=PromptSet.objects.create(name="landmarks"),
        arms=["base", "lora"],
        config={
            "model": "/m",
            "adapters": [
                {"name": "lora", "path": training.files["adapter"], "method": "lora", "format": "diffusers"}
            ],
        },
    )
    hours_ago(run, 2)
    return run


@pytest.fixture
def study(generation) -> Study:
    study = Study.objects.create(
        title="Which looks better?",
        slug="pilot",
        status="open",
        consent_text="c",
        instructions="i",
        generation_run=generation,
        arms=["base", "lora"],
        target_participants=10,
    )
    Participant.objects.create(study=study, seed=0, consent="given", finished_at=timezone.now())
    Participant.objects.create(study=study, seed=0, consent="given")
    Participant.objects.create(study=study, seed=0, consent="declined")
    return study


def test_runs_started_without_a_job_are_listed_newest_first_with_results_and_links(
    staff_client, training, generation, study
):
    failed = TrainingRun.objects.create(
        method="ti", dataset_path="/d", output_path="/o/ti", config={}, status="failed", error=TRACEBACK
    )
    page = staff_client.get(reverse("console:runs")).content.decode()
    keys = [
        f'data-run="training-{failed.pk}"',
        f'data-run="generation-{generation.pk}"',
        f'data-run="training-{training.pk}"',
    ]
    assert all(key in page for key in keys) and sorted(keys, key=page.index) == keys
    assert reverse("console:training_run_detail", args=[training.pk]) in page
    assert "best epoch 2, val 0.1234" in page
    assert reverse("generation:run_gallery", args=[generation.pk]) in page and "0 images" in page
    assert (
        reverse("studies:dashboard", args=["pilot"]) in page
        and reverse("analysis:report", args=["pilot"]) in page
    )

    listing = staff_client.get(reverse("console:runs_json")).json()
    assert [(r["key"], r["status"], r["active"], r["job"]) for r in listing["runs"]] == [
        (f"training-{failed.pk}", "failed", False, None),
        (f"generation-{generation.pk}", "finished", False, None),
        (f"training-{training.pk}", "finished", False, None),
    ]


def test_a_run_shows_its_latest_jobs_progress_and_polls_while_active(staff_client, training):
    run_type = ContentType.objects.get_for_model(TrainingRun)
    link = {"kind": Job.Kind.TRAINING, "func_path": "trainer.jobs.training_run_job", "content_type": run_type}
    first = Job.objects.create(**link, object_id=training.pk, status="failed", error="killed")
    retry = Job.objects.create(
        **link,
        object_id=training.pk,
        retry_of=first,
        status="running",
        percent=40.0,
        stage="train",
        done=2,
        total=5,
        eta_at=timezone.now() + timedelta(minutes=10, seconds=30),
    )
    TrainingRun.objects.filter(pk=training.pk).update(status="running")
    page = staff_client.get(reverse("console:runs")).content.decode()
    assert f'data-job="{retry.pk}"' in page and "setTimeout(poll, 2000)" in page and "train 2/5" in page
    assert "about 10\xa0minutes left" in page
    (row,) = staff_client.get(reverse("console:runs_json")).json()["runs"]
    assert row["active"] and row["job"]["id"] == retry.pk and row["job"]["percent"] == 40.0
    assert row["job"]["eta"] == "about 10\xa0minutes left"

    detail = staff_client.get(reverse("console:training_run_detail", args=[training.pk])).content.decode()
    assert reverse("console:job_detail", args=[first.pk]) in detail and f"retry of {first.pk}" in detail
    job_page = staff_client.get(reverse("console:job_detail", args=[retry.pk])).content.decode()
    chart = reverse("console:training_run_loss_chart", args=[training.pk])
    assert reverse("console:training_run_detail", args=[training.pk]) in job_page and chart in job_page
    assert "40.0% of the whole run" in job_page and "about 10\xa0minutes left (ETA" in job_page


def test_training_run_detail_shows_config_metrics_curve_files_and_studies(staff_client, training, study):
    page = staff_client.get(reverse("console:training_run_detail", args=[training.pk])).content.decode()
    assert "<th>rank</th>" in page and "0.12340" in page and "0.25000" in page  # config and metrics table
    chart = reverse("console:training_run_loss_chart", args=[training.pk])
    assert f'<img src="{chart}"' in page
    response = staff_client.get(chart)
    assert response["Content-Type"] == "image/png"
    assert b"".join(response.streaming_content) == (Path(training.output_path) / "loss.png").read_bytes()
    assert training.files["adapter"] in page
    assert "Started without a job" in page
    assert reverse("generation:run_gallery", args=[study.generation_run.pk]) in page
    assert (
        reverse("studies:entry", args=["pilot"]) in page
        and reverse("analysis:report", args=["pilot"]) in page
    )


def test_a_run_without_loss_png_shows_its_epochs_and_no_chart(staff_client, training):
    chart = reverse("console:training_run_loss_chart", args=[training.pk])
    (Path(training.output_path) / "loss.png").unlink()  # a running run: drawn only when it ends
    page = staff_client.get(reverse("console:training_run_detail", args=[training.pk])).content.decode()
    assert chart not in page and "drawn when the run ends" in page and "0.25000" in page
    assert staff_client.get(chart).status_code == 404


def test_a_failed_runs_error_is_shown_in_full(staff_client, generation):
    training = TrainingRun.objects.create(
        method="lora", dataset_path="/d", output_path="/o", config={}, status="failed", error=TRACEBACK
    )
    page = staff_client.get(reverse("console:training_run_detail", args=[training.pk])).content.decode()
    assert "Traceback (most recent call last):" in page and "line 9" in page and "CUDA out of memory" in page
    GenerationRun.objects.filter(pk=generation.pk).update(status="failed", error=TRACEBACK)
    page = staff_client.get(reverse("console:generation_run_detail", args=[generation.pk])).content.decode()
    assert "Traceback (most recent call last):" in page and "CUDA out of memory" in page
    assert reverse("generation:run_gallery", args=[generation.pk]) in page


def test_studies_page_counts_participants_and_links_onward(staff_client, study):
    page = staff_client.get(reverse("console:studies")).content.decode()
    row = page[page.index('data-study="pilot"') :].split("</tr>")[0]
    assert "Which looks better?" in row and "open" in row
    assert "<td>2</td>\n    <td>1</td>\n    <td>10</td>" in row  # started (consented), finished, target
    for name in ("studies:dashboard", "studies:entry", "analysis:report"):
        assert reverse(name, args=["pilot"]) in row, name
    assert reverse("console:generation_run_detail", args=[study.generation_run.pk]) in row


def test_pages_read_job_state_and_never_reconcile(staff_client, training, settings):
    settings.REDIS_URL = ""
    TrainingRun.objects.filter(pk=training.pk).update(status="running")
    dead = Job.objects.create(
        kind=Job.Kind.TRAINING,
        func_path="trainer.jobs.training_run_job",
        run=training,
        status=Job.Status.RUNNING,
        heartbeat_at=timezone.now() - timedelta(hours=1),  # its process died an hour ago
    )
    for url in (
        reverse("console:runs"),
        reverse("console:runs_json"),
        reverse("console:job_detail", args=[dead.pk]),
        reverse("console:training_run_detail", args=[training.pk]),
    ):
        assert staff_client.get(url).status_code == 200, url
    dead.refresh_from_db()
    assert dead.status == Job.Status.RUNNING  # a GET wrote nothing: ending it is reconcile's work
    page = staff_client.get(reverse("console:job_detail", args=[dead.pk])).content.decode()
    assert "Last heartbeat" in page and "1 hour ago" in page and "older than 60 s" in page
    assert jobs_reconcile() == 1


def test_a_finished_runs_adapters_download_as_one_zip(staff_client, tmp_path):
    output = tmp_path / "ti-run"
    output.mkdir()
    names = ["learned_embeds.safetensors", "ghibli.safetensors", "run.json", "metrics.csv"]
    for name in names:
        (output / name).write_bytes(name.encode())
    run = TrainingRun.objects.create(
        method="ti",
        status="finished",
        best_epoch=3,
        dataset_path=str(tmp_path / "d"),
        output_path=str(output),
        config={},
        files={name: str(output / name) for name in names} | {"best": str(output / "best")},
    )
    detail = staff_client.get(reverse("console:training_run_detail", args=[run.pk])).content.decode()
    url = reverse("console:training_run_adapters", args=[run.pk])
    assert url in detail
    response = staff_client.get(url)
    assert response["Content-Disposition"] == f'attachment; filename="training-run-{run.pk}-ti-adapters.zip"'
    with zipfile.ZipFile(io.BytesIO(b"".join(response.streaming_content))) as archive:
        folder = f"training-run-{run.pk}-ti/"
        assert sorted(archive.namelist()) == sorted(
            folder + name
            for name in ["README.txt", "ghibli.safetensors", "learned_embeds.safetensors", "run.json"]
        )
        assert archive.read(folder + "ghibli.safetensors") == b"ghibli.safetensors"
        readme = archive.read(folder + "README.txt").decode()
    assert "ghibli.safetensors: Textual Inversion for A1111" in readme
    assert "learned_embeds.safetensors: Textual Inversion for diffusers" in readme

    TrainingRun.objects.filter(pk=run.pk).update(status="running")
    missing = staff_client.get(url)
    assert (
        missing.status_code == 404
        and url
        not in staff_client.get(reverse("console:training_run_detail", args=[run.pk])).content.decode()
    )


def test_the_gallery_says_what_the_effect_check_compared(staff_client):
    run = GenerationRun.objects.create(
        prompt_set=PromptSet.objects.create(name="fx"),
        arms=["base", "lora"],
        status="finished",
        config={"seeds": [0], "probe_seed": 3, "effect_threshold": 0.5},
        effects={"lora": 12.25},
    )
    page = staff_client.get(reverse("generation:run_gallery", args=[run.pk])).content.decode()
    note = page[page.index('id="effect-check-note"') :]
    assert "lora: 12.25" in page
    assert "rendered at seed 3 with the trained adapter and with the same adapter untrained" in " ".join(
        note.split()
    )
    assert "without the adapter" not in page  # the old, wrong description
