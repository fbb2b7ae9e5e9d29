"""The console's reads: every training and generation run (however it was started), its jobs, and the studies."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from django.contrib.contenttypes.models import ContentType
from django.db.models import Count, Model, Q, QuerySet
from django.utils.timesince import timeuntil

from generation.models import GenerationRun, PromptSet
from generation.selectors import generation_run_list
from peftlab.models import Job
from studies.models import Participant, Study
from studies.selectors import study_pilot_key
from trainer.models import TrainingRun
from trainer.selectors import epoch_metric_list, training_run_list

RECENT = 100  # rows per list: runs, other jobs, studies
RUN_KINDS = {Job.Kind.TRAINING: TrainingRun, Job.Kind.GENERATION: GenerationRun}
ACTIVE_RUN_STATUSES = ("queued", "running")


@dataclass
class RunRow:
    """One training or generation run as the runs list shows it, with its latest job if a job ran it."""

    kind: str  # "training" or "generation"
    run: TrainingRun | GenerationRun
    job: Job | None = None
    studies: list[Study] = field(default_factory=list)

    @property
    def key(self) -> str:
        """A page-wide id of the row, e.g. "training-3", shared by the page and its JSON."""
        return f"{self.kind}-{self.run.pk}"

    @property
    def is_active(self) -> bool:
        """Whether the run or its latest job may still change."""
        return self.run.status in ACTIVE_RUN_STATUSES or bool(self.job and self.job.is_active)


def job_eta(job: Job) -> str:
    """ "about 4 minutes left" for an active job with an estimate, else ""."""
    return f"about {timeuntil(job.eta_at)} left" if job.is_active and job.eta_at else ""


def job_summary(job: Job) -> dict:
    """What the runs list shows of a job, as JSON for the polling script."""
    return {
        "id": job.pk,
        "kind": job.kind,
        "status": job.status,
        "percent": round(job.percent, 1),
        "stage": job.stage,
        "done": job.done,
        "total": job.total,
        "metrics": job.metrics,
        "active": job.is_active,
        "eta_at": job.eta_at.isoformat() if job.eta_at else None,
        "eta": job_eta(job),
    }


def run_summary(row: RunRow) -> dict:
    """A run row as JSON: the run's own status and its latest job's progress (null without a job)."""
    return {
        "key": row.key,
        "kind": row.kind,
        "id": row.run.pk,
        "status": row.run.status,
        "active": row.is_active,
        "job": job_summary(row.job) if row.job else None,
    }


def run_jobs(*, run: Model, kind: str) -> QuerySet[Job]:
    """The jobs that worked on `run` as `kind` (a run and its retries), newest first."""
    return Job.objects.filter(
        content_type=ContentType.objects.get_for_model(run), object_id=run.pk, kind=kind
    ).select_related("retry_of")


def latest_jobs(kind: str, run_ids: list[int]) -> dict[int, Job]:
    """Per run id, the newest job of `kind` that worked on it."""
    model = RUN_KINDS[kind]
    latest: dict[int, Job] = {}
    jobs = Job.objects.filter(
        content_type=ContentType.objects.get_for_model(model), object_id__in=run_ids, kind=kind
    )
    for job in jobs:  # newest first (Job.Meta.ordering), so the first per run wins
        latest.setdefault(job.object_id, job)
    return latest


def adapter_paths(run: GenerationRun) -> list[Path]:
    """The adapter files or folders a generation run loaded, one per adapter arm."""
    return [Path(adapter["path"]).resolve() for adapter in run.adapters]


def generation_runs_using(
    *, run: TrainingRun, among: list[GenerationRun] | None = None
) -> list[GenerationRun]:
    """The generation runs that loaded an adapter from this training run's output folder."""
    output = Path(run.output_path).resolve()
    candidates = among if among is not None else GenerationRun.objects.prefetch_related("studies")
    return [g for g in candidates if any(p.is_relative_to(output) for p in adapter_paths(g))]


def console_run_rows(*, limit: int = RECENT) -> list[RunRow]:
    """The newest training and generation runs together, newest first, each with its latest job and studies."""
    training = list(training_run_list()[:limit])
    generation = list(generation_run_list().prefetch_related("studies")[:limit])
    with_adapters = [g for g in generation if adapter_paths(g)]
    training_jobs = latest_jobs(Job.Kind.TRAINING, [r.pk for r in training])
    generation_jobs = latest_jobs(Job.Kind.GENERATION, [r.pk for r in generation])
    rows = [
        RunRow(
            Job.Kind.TRAINING,
            run,
            training_jobs.get(run.pk),
            [s for g in generation_runs_using(run=run, among=with_adapters) for s in g.studies.all()],
        )
        for run in training
    ] + [
        RunRow(Job.Kind.GENERATION, run, generation_jobs.get(run.pk), list(run.studies.all()))
        for run in generation
    ]
    rows.sort(key=lambda row: (row.run.created_at, row.kind), reverse=True)
    return rows[:limit]


def other_jobs(*, limit: int = RECENT) -> list[Job]:
    """Recent jobs that are not a training or generation run's job (datasets, study creation)."""
    return list(Job.objects.exclude(kind__in=list(RUN_KINDS))[:limit])


def training_run_detail(*, run: TrainingRun) -> dict:
    """What a training run's page shows besides the run: epochs, jobs, and the renders and studies of its adapters."""
    generation_runs = generation_runs_using(run=run)
    return {
        "epochs": list(epoch_metric_list(run=run)),
        "jobs": list(run_jobs(run=run, kind=Job.Kind.TRAINING)),
        "generation_runs": generation_runs,
        "studies": [s for g in generation_runs for s in g.studies.all()],
    }


def generation_run_detail(*, run: GenerationRun) -> dict:
    """What a generation run's page shows besides the run: image count, jobs and studies."""
    return {
        "image_count": run.images.count(),
        "jobs": list(run_jobs(run=run, kind=Job.Kind.GENERATION)),
        "studies": list(run.studies.all()),
    }


def loss_chart_path(run: TrainingRun) -> Path | None:
    """The loss.png the training loop drew for a finished run (None before it ends, or if it is gone)."""
    path = (run.files or {}).get("loss.png")
    return Path(path) if path and Path(path).is_file() else None


def arm_names(study: Study) -> list[str]:
    """The study's arms as the console shows them: `lora “LoRA rank 8”` where a display name is set."""
    return [f"{arm} “{study.arm_labels[arm]}”" if study.arm_labels.get(arm) else arm for arm in study.arms]


def study_list(*, limit: int = RECENT) -> list[Study]:
    """The newest studies with their generation run, participants started (consented) and finished, arm names."""
    studies = list(
        Study.objects.select_related("generation_run").annotate(
            started=Count("participants", filter=Q(participants__consent=Participant.Consent.GIVEN)),
            finished=Count("participants", filter=Q(participants__finished_at__isnull=False)),
        )[:limit]
    )
    for study in studies:
        study.arm_names = arm_names(study)
    return studies


def study_summary(*, study: Study) -> dict:
    """What a study's console page shows besides the study: questions, trial counts and participants."""
    trials = study.trials.aggregate(
        regular=Count("id", filter=Q(is_attention_check=False)),
        checks=Count("id", filter=Q(is_attention_check=True)),
    )
    participants = study.participants.aggregate(
        started=Count("id", filter=Q(consent=Participant.Consent.GIVEN)),
        finished=Count("id", filter=Q(finished_at__isnull=False)),
    )
    return {
        "questions": list(study.questions.all()),
        "trials": trials["regular"],
        "attention_checks": trials["checks"],
        "started": participants["started"],
        "finished": participants["finished"],
        "arm_names": arm_names(study),
        "pilot_key": study_pilot_key(study=study),
    }


def prompt_set_list() -> QuerySet[PromptSet]:
    """Every prompt set with its number of prompts and of generation runs."""
    return PromptSet.objects.annotate(
        prompt_count=Count("prompts", distinct=True), run_count=Count("runs", distinct=True)
    )
