"""The trainer's reads."""

from pathlib import Path

from django.db.models import QuerySet

from trainer.models import Dataset, EpochMetric, TrainingRun


def dataset_get_by_path(*, path: Path) -> Dataset | None:
    """The dataset recorded for a prepared folder, if any."""
    return Dataset.objects.filter(path=str(Path(path).resolve())).first()


def training_run_list(*, method: str | None = None) -> QuerySet[TrainingRun]:
    """Training runs, newest first, optionally of one method."""
    runs = TrainingRun.objects.select_related("dataset")
    return runs.filter(method=method) if method else runs


def epoch_metric_list(*, run: TrainingRun) -> QuerySet[EpochMetric]:
    """A run's epochs in order."""
    return EpochMetric.objects.filter(run=run).order_by("epoch")
