"""The trainer's reads."""

from pathlib import Path

from django.db.models import QuerySet

from trainer.models import Dataset


def dataset_list() -> QuerySet[Dataset]:
    """All prepared datasets, newest first."""
    return Dataset.objects.all()


def dataset_get_by_path(*, path: Path) -> Dataset | None:
    """The dataset recorded for a prepared folder, if any."""
    return Dataset.objects.filter(path=str(Path(path).resolve())).first()
