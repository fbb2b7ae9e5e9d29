"""The trainer's writes: each state change is one keyword-only function."""

from pathlib import Path

from django.db import transaction
from django.utils import timezone

from peftlab.errors import UserInputError
from peftlab.progress import ProgressCallback, ignore_progress
from trainer.engine.config import TrainingConfig, build_config
from trainer.engine.dataset import PrepareConfig, PreparedDataset, prepare_dataset
from trainer.engine.launch import launch_training
from trainer.engine.loop import TrainingResult, check_inputs, train
from trainer.engine.results import EpochResult
from trainer.engine.tiny_model import TinyModel, TinyModelConfig, build_tiny_model
from trainer.models import Dataset, EpochMetric, TrainingRun
from trainer.selectors import dataset_get_by_path


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


def training_run_create(
    *, method: str, dataset_dir: Path, output: Path, config: TrainingConfig, resume: bool = False
) -> TrainingRun:
    """Check the input (dataset, output folder, resume state) and record a queued run; nothing trains yet."""
    if config.method != method:
        raise UserInputError(f"the config is for {config.method or 'no method'}, not {method}.")
    check_inputs(Path(dataset_dir), Path(output), config, resume)
    run = TrainingRun(
        method=method,
        dataset=dataset_get_by_path(path=Path(dataset_dir)),
        dataset_path=str(Path(dataset_dir).resolve()),
        output_path=str(Path(output).resolve()),
        config=config.to_dict(),
        resume=resume,
    )
    run.full_clean()
    run.save()
    return run


def training_run_execute(
    *, run: TrainingRun, progress: ProgressCallback = ignore_progress, processes: int = 1
) -> TrainingRun:
    """Train a queued run here, or on `processes` launched processes, recording each finished epoch.

    A failure marks the run failed and re-raises.
    """
    config = build_config(run.method, run.config)
    run.status, run.started_at, run.error = TrainingRun.Status.RUNNING, timezone.now(), ""
    run.save(update_fields=["status", "started_at", "error"])
    run.warnings = []
    run.save(update_fields=["warnings"])
    options = {
        "resume": run.resume,
        "progress": progress,
        "on_epoch": lambda epoch: epoch_metric_record(run=run, epoch=epoch),
        "on_warning": lambda message: training_run_warn(run=run, message=message),
    }
    try:
        if processes > 1:
            result = launch_training(
                Path(run.dataset_path), Path(run.output_path), config, processes=processes, **options
            )
        else:
            result = train(Path(run.dataset_path), Path(run.output_path), config, **options)
    except BaseException as error:  # a kill or Ctrl-C too: the row must not stay "running"
        run.status, run.finished_at = TrainingRun.Status.FAILED, timezone.now()
        run.error = str(error) or type(error).__name__
        run.save(update_fields=["status", "finished_at", "error"])
        raise
    return training_run_finish(run=run, result=result)


@transaction.atomic
def training_run_finish(*, run: TrainingRun, result: TrainingResult) -> TrainingRun:
    """Record a finished run's results, including epochs restored from a resumed checkpoint."""
    # Epoch 0 (before training, no training loss) stays in metrics.csv and run.json; the table holds trained epochs.
    for epoch in result.epochs:
        if epoch.epoch:
            epoch_metric_record(run=run, epoch=epoch)
    run.status, run.finished_at = TrainingRun.Status.FINISHED, timezone.now()
    run.best_epoch, run.best_val_loss = result.best_epoch, result.best_val_loss
    run.stopped_early, run.seconds, run.files = result.stopped_early, result.seconds, result.files
    run.full_clean()
    run.save()
    return run


def training_run_warn(*, run: TrainingRun, message: str) -> None:
    """Record something the researcher should know about the run, shown on its page while it trains."""
    if message not in run.warnings:
        run.warnings = [*run.warnings, message]
        run.save(update_fields=["warnings"])


def epoch_metric_record(*, run: TrainingRun, epoch: EpochResult) -> EpochMetric:
    """Record (or refresh) one epoch's losses and speed."""
    metric, _ = EpochMetric.objects.update_or_create(
        run=run,
        epoch=epoch.epoch,
        defaults={
            "train_loss": epoch.train_loss,
            "val_loss": epoch.val_loss,
            "seconds": epoch.seconds,
            "samples_per_s": epoch.samples_per_s,
        },
    )
    return metric


def training_join(*, dataset_dir: Path, output: Path, config: TrainingConfig, resume: bool = False) -> None:
    """Train as a secondary process of `accelerate launch`; the main process records the run."""
    train(Path(dataset_dir), Path(output), config, resume=resume)
