"""Studies' background job: create a study from a finished generation run (light: the default queue)."""

from generation.models import GenerationRun
from peftlab.jobs import DEFAULT_QUEUE, job_enqueue
from peftlab.models import Job
from peftlab.progress import Progress, ProgressCallback
from studies.services import study_create_from_generation


def study_create_job(*, job: Job, progress: ProgressCallback) -> None:
    """Create the study described by the job's kwargs from the job's generation run."""
    progress(Progress("create study", 0, 1))
    study = study_create_from_generation(run=job.run, **job.kwargs)
    progress(
        Progress(
            "create study", 1, 1, message=f"study {study.slug} created with {study.trials.count()} trials"
        )
    )


def study_job_enqueue(*, run: GenerationRun, **study_options) -> Job:
    """Queue the creation of a study from `run` with `study_create_from_generation`'s options."""
    return job_enqueue(
        kind=Job.Kind.STUDY, func=study_create_job, run=run, kwargs=study_options, queue=DEFAULT_QUEUE
    )
