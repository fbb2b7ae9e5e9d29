"""Generation's background job: render a run with the job's progress reporter."""

from django.db import transaction

from generation.engine import GenerationConfig
from generation.models import GenerationRun, PromptSet
from generation.services import generated_images_delete, generation_run_create, generation_run_execute
from peftlab.jobs import GPU_QUEUE, job_enqueue
from peftlab.models import Job
from peftlab.progress import ProgressCallback


def generation_run_job(*, job: Job, progress: ProgressCallback) -> None:
    """Render the job's run; a retry renders it again from the start (seeds make it the same images)."""
    run: GenerationRun = job.run
    if job.retry_of_id is not None:
        generated_images_delete(run=run)  # a killed worker may have left part of the images
        run.status, run.error = GenerationRun.Status.QUEUED, ""
        run.save(update_fields=["status", "error"])
    generation_run_execute(run=run, progress=progress)


@transaction.atomic
def generation_job_enqueue(*, prompt_set: PromptSet, config: GenerationConfig, name: str = "") -> Job:
    """Record a queued generation run and a job on the gpu queue that renders it after the commit."""
    run = generation_run_create(prompt_set=prompt_set, config=config, name=name)
    return job_enqueue(kind=Job.Kind.GENERATION, func=generation_run_job, run=run, queue=GPU_QUEUE)
