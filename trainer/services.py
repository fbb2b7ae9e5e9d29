"""The trainer's writes: each state change is one keyword-only function."""

from pathlib import Path

from django.db import transaction

from peftlab.progress import ProgressCallback, ignore_progress
from trainer.engine.dataset import PrepareConfig, PreparedDataset, prepare_dataset
from trainer.engine.tiny_model import TinyModel, TinyModelConfig, build_tiny_model
from trainer.models import Dataset


def dataset_prepare(
    *, source: Path, output: Path, config: PrepareConfig, progress: ProgressCallback = ignore_progress
) -> tuple[Dataset, PreparedDataset]:
    """Prepare `source` into `output` and record (or refresh) its `Dataset` row."""
    prepared = prepare_dataset(source, output, config, progress=progress)
    with transaction.atomic():
        dataset, _ = Dataset.objects.update_or_create(
            path=str(Path(output).resolve()),
            defaults={
                "name": Path(output).name,
                "source_path": str(Path(source).resolve()),
                "manifest_sha256": prepared.manifest_sha256,
                "resolution": config.resolution,
                "num_pairs": len(prepared.pairs),
                "num_train": len(prepared.train),
                "num_validation": len(prepared.validation),
                "num_skipped": len(prepared.skipped),
            },
        )
    return dataset, prepared


def tiny_model_build(*, output: Path, config: TinyModelConfig) -> TinyModel:
    """Write the tiny offline Stable-Diffusion-shaped pipeline to `output`."""
    return build_tiny_model(output, config)
