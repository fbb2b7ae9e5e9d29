"""The trainer's background jobs: thin wrappers that call a service with the job's progress reporter."""

from pathlib import Path

from peftlab.models import Job
from peftlab.progress import ProgressCallback
from trainer.engine.dataset import PrepareConfig
from trainer.services import dataset_prepare


def dataset_prepare_job(*, job: Job, progress: ProgressCallback) -> None:
    """Prepare the dataset described by the job's kwargs (source, output, and PrepareConfig fields)."""
    kwargs = dict(job.kwargs)
    source, output = Path(kwargs.pop("source")), Path(kwargs.pop("output"))
    dataset_prepare(source=source, output=output, config=PrepareConfig(**kwargs), progress=progress)
