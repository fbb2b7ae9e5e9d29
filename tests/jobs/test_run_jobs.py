"""Training and generation as real jobs on the gpu queue: run by RQ's SimpleWorker against the real Redis,
and in-process without Redis."""

from datetime import timedelta
from pathlib import Path

import django_rq
import pytest
from django.utils import timezone
from rq import SimpleWorker
from rq.registry import StartedJobRegistry

from generation.engine import GenerationConfig
from generation.jobs import generation_job_enqueue
from generation.models import GenerationRun, PromptSet
from peftlab.jobs import job_execute, job_retry, jobs_reconcile
from peftlab.models import Job
from peftlab.progress import Progress
from trainer.engine.config import build_config
from trainer.engine.dataset import PrepareConfig
from trainer.jobs import training_job_enqueue
from trainer.models import TrainingRun
from trainer.services import dataset_prepare, training_run_execute

pytestmark = [pytest.mark.django_db, pytest.mark.slow]


def work() -> None:
    queue = django_rq.get_queue("gpu")
    SimpleWorker([queue], connection=queue.connection).work(burst=True)


@pytest.fixture
def dataset_dir(images_dir, tmp_path) -> Path:
    output = tmp_path / "dataset"
    dataset_prepare(
        source=images_dir, output=output, config=PrepareConfig(resolution=64, min_size=0, val_fraction=0.25)
    )
    return output


def lora_config(model: Path):
    return build_config(
        "lora", model=str(model), epochs=2, resolution=64, batch_size=2, validation_timesteps=1, cache=False
    )


def test_training_job_runs_to_finished_with_progress(
    rq_settings, tiny_model_dir, dataset_dir, tmp_path, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        job = training_job_enqueue(
            method="lora",
            dataset_dir=dataset_dir,
            output=tmp_path / "run",
            config=lora_config(tiny_model_dir),
        )
    assert job.queue == "gpu" and django_rq.get_queue("gpu").job_ids == [job.rq_job_id]
    work()
    job.refresh_from_db()
    run = TrainingRun.objects.get()
    assert job.status == Job.Status.FINISHED, job.error
    assert job.run == run and run.status == TrainingRun.Status.FINISHED
    assert job.stage == "epoch" and job.done == 2 and job.total == 2 and job.percent == 100.0
    assert set(job.metrics) == {"train_loss", "val_loss"}
    assert "[epoch] epoch 2/2" in job.log
    assert run.epochs.count() == 2


def test_killed_training_worker_fails_the_run_and_the_retry_resumes_from_its_checkpoint(
    rq_settings, tiny_model_dir, dataset_dir, tmp_path, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        job = training_job_enqueue(
            method="lora",
            dataset_dir=dataset_dir,
            output=tmp_path / "run",
            config=lora_config(tiny_model_dir),
        )
    queue = django_rq.get_queue("gpu")
    # A worker takes the job, trains one epoch (writing its checkpoint) and is killed before the second.
    worker = SimpleWorker([queue], connection=queue.connection)
    worker.register_birth()
    rq_job, _ = queue.dequeue_any([queue], timeout=None, connection=queue.connection)
    worker.prepare_execution(rq_job)
    worker.prepare_job_execution(rq_job)
    Job.objects.filter(pk=job.pk).update(status=Job.Status.RUNNING)
    run = TrainingRun.objects.get()

    def killed_after_first_epoch(report: Progress) -> None:
        if report.stage == "epoch" and report.done == 1:
            raise KeyboardInterrupt  # stands in for SIGKILL: nothing after this line runs in the worker

    with pytest.raises(KeyboardInterrupt):
        training_run_execute(run=run, progress=killed_after_first_epoch)
    TrainingRun.objects.filter(pk=run.pk).update(
        status=TrainingRun.Status.RUNNING, error=""
    )  # SIGKILL: no cleanup
    first_epoch_loss = run.epochs.get(epoch=1).train_loss

    registry = StartedJobRegistry(queue=queue)
    (entry,) = queue.connection.zrange(registry.key, 0, -1)
    queue.connection.zadd(registry.key, {entry: 1}, xx=True)  # its heartbeat expires
    assert jobs_reconcile() == 1
    job.refresh_from_db()
    run.refresh_from_db()
    assert job.status == Job.Status.FAILED and "AbandonedJobError" in job.error
    assert run.status == TrainingRun.Status.FAILED and "AbandonedJobError" in run.error

    with django_capture_on_commit_callbacks(execute=True):
        retry = job_retry(job=job)
    work()
    retry.refresh_from_db()
    run.refresh_from_db()
    assert retry.status == Job.Status.FINISHED, retry.error
    assert run.status == TrainingRun.Status.FINISHED and run.resume is True
    assert run.epochs.count() == 2
    assert run.epochs.get(epoch=1).train_loss == first_epoch_loss  # epoch 1 came from the checkpoint
    assert "epoch 1/2" not in retry.log and "[epoch] epoch 2/2" in retry.log


def test_generation_job_renders_every_image(
    rq_settings, tiny_model_dir, tmp_path, settings, django_capture_on_commit_callbacks
):
    settings.MEDIA_ROOT = tmp_path / "media"
    prompt_set = PromptSet.objects.create(name="tiny")
    prompt_set.prompts.create(landmark="Big Ben", text="Big Ben at sunset")
    config = GenerationConfig(model=str(tiny_model_dir), seeds=(0, 1), steps=2, width=64, height=64)
    with django_capture_on_commit_callbacks(execute=True):
        job = generation_job_enqueue(prompt_set=prompt_set, config=config, name="jobs test")
    work()
    job.refresh_from_db()
    run = GenerationRun.objects.get()
    assert job.status == Job.Status.FINISHED, job.error
    assert run.status == GenerationRun.Status.FINISHED and run.images.count() == 2
    assert job.stage == "render base" and job.done == 2 and job.percent == 100.0


def test_killed_in_process_training_is_failed_by_reconcile_and_the_retry_resumes_from_its_checkpoint(
    no_redis, tiny_model_dir, dataset_dir, tmp_path, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=False):
        job = training_job_enqueue(
            method="lora",
            dataset_dir=dataset_dir,
            output=tmp_path / "run",
            config=lora_config(tiny_model_dir),
        )
    assert job.rq_job_id == ""  # in-process: only its heartbeat tells whether its process lives
    run = TrainingRun.objects.get()

    def killed_after_first_epoch(report: Progress) -> None:
        if report.stage == "epoch" and report.done == 1:
            raise KeyboardInterrupt  # stands in for SIGKILL: nothing after this line runs in the process

    Job.objects.filter(pk=job.pk).update(status=Job.Status.RUNNING, heartbeat_at=timezone.now())
    with pytest.raises(KeyboardInterrupt):
        training_run_execute(run=run, progress=killed_after_first_epoch)
    TrainingRun.objects.filter(pk=run.pk).update(status=TrainingRun.Status.RUNNING, error="")
    first_epoch_loss = run.epochs.get(epoch=1).train_loss
    assert jobs_reconcile(stale_after_s=60) == 0  # its last heartbeat is fresh: it may still be running
    Job.objects.filter(pk=job.pk).update(heartbeat_at=timezone.now() - timedelta(minutes=2))

    assert jobs_reconcile(stale_after_s=60) == 1
    job.refresh_from_db()
    run.refresh_from_db()
    assert job.status == Job.Status.FAILED and "no heartbeat since" in job.error
    assert run.status == TrainingRun.Status.FAILED and "no heartbeat since" in run.error

    retry = job_execute(job_id=job_retry(job=job, inline=True).pk)
    run.refresh_from_db()
    assert retry.status == Job.Status.FINISHED, retry.error
    assert run.status == TrainingRun.Status.FINISHED and run.resume is True
    assert run.epochs.get(epoch=1).train_loss == first_epoch_loss  # epoch 1 came from the checkpoint
    assert "epoch 1/2" not in retry.log and "[epoch] epoch 2/2" in retry.log
