"""The trainer's background jobs: thin wrappers that call a service with the job's progress reporter."""

from pathlib import Path

from django.db import transaction

from peftlab.errors import UserInputError
from peftlab.jobs import GPU_QUEUE, job_enqueue
from peftlab.models import Job
from peftlab.progress import ProgressCallback
from trainer.engine.config import TrainingConfig
from trainer.engine.dataset import PrepareConfig
from trainer.engine.loop import CHECKPOINT
from trainer.models import TrainingRun
from trainer.services import dataset_prepare, training_run_create, training_run_execute


def dataset_prepare_job(*, job: Job, progress: ProgressCallback) -> None:
    """Prepare the dataset described by the job's kwargs (source, output, and PrepareConfig fields)."""
    kwargs = dict(job.kwargs)
    source, output = Path(kwargs.pop("source")), Path(kwargs.pop("output"))
    dataset_prepare(source=source, output=output, config=PrepareConfig(**kwargs), progress=progress)


def training_run_job(*, job: Job, progress: ProgressCallback) -> None:
    """Train the job's run on `kwargs["processes"]` processes (1 by default: in the worker itself).

    A retry resumes from the run's last checkpoint when there is one.
    """
    run: TrainingRun = job.run
    if job.retry_of_id is not None:
        run.resume = (Path(run.output_path) / CHECKPOINT).is_file()
        run.status, run.error = TrainingRun.Status.QUEUED, ""
        run.save(update_fields=["resume", "status", "error"])
    training_run_execute(run=run, progress=progress, processes=job.kwargs.get("processes", 1))


@transaction.atomic
def training_job_enqueue(
    *,
    method: str,
    dataset_dir: Path,
    output: Path,
    config: TrainingConfig,
    resume: bool = False,
    processes: int = 1,
) -> Job:
    """Record a training run and a job on the gpu queue that trains it on `processes` processes after the commit."""
    if processes < 1:
        raise UserInputError(f"processes must be 1 or more (one per GPU), got {processes}.")
    run = training_run_create(
        method=method, dataset_dir=dataset_dir, output=output, config=config, resume=resume
    )
    return job_enqueue(
        kind=Job.Kind.TRAINING,
        func=training_run_job,
        run=run,
        kwargs={"processes": processes},
        queue=GPU_QUEUE,
    )
