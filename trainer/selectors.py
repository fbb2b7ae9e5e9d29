"""The trainer's reads."""

import zipfile
from pathlib import Path
from typing import BinaryIO

from django.db.models import QuerySet

from peftlab.errors import UserInputError
from trainer.engine.export import WEIGHT_SUFFIXES
from trainer.engine.methods import KOHYA_WEIGHTS, LORA_WEIGHTS, PEFT_CONFIG, PEFT_WEIGHTS, TI_WEIGHTS
from trainer.engine.methods.lycoris import LohaMethod, LokrMethod
from trainer.models import Dataset, EpochMetric, TrainingRun

# What each adapter file is for, in the zip's README.txt; any other weights file is the A1111 embedding.
ADAPTER_FORMATS = {
    LORA_WEIGHTS: "LoRA for diffusers: pipe.load_lora_weights(folder)",
    KOHYA_WEIGHTS: "LoRA in kohya's format: A1111 (models/Lora), ComfyUI, kohya's scripts",
    TI_WEIGHTS: "Textual Inversion for diffusers: pipe.load_textual_inversion(file, token=...)",
    PEFT_WEIGHTS: "PEFT adapter (LoHa, LoKr, OFT) with adapter_config.json: PeftModel.from_pretrained(pipe.unet, folder)",
    PEFT_CONFIG: "the PEFT adapter's config (peft_type, rank, targets), read with adapter_model.safetensors",
    LohaMethod.lycoris_file: "LoHa in LyCORIS's format: ComfyUI (models/loras), A1111 (models/Lora)",
    LokrMethod.lycoris_file: "LoKr in LyCORIS's format: ComfyUI (models/loras), A1111 (models/Lora)",
}
A1111_EMBEDDING = "Textual Inversion for A1111 (embeddings/; its file name is the trigger word)"


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


def training_run_adapter_files(*, run: TrainingRun) -> list[Path]:
    """The best epoch's adapter files a finished run copied to the top of its output folder (a PEFT adapter's
    config with them), and its run.json."""
    files = [Path(path) for path in (run.files or {}).values()]
    adapters = sorted(
        path
        for path in files
        if (path.suffix in WEIGHT_SUFFIXES or path.name == PEFT_CONFIG)
        and path.parent == Path(run.output_path)
    )
    run_json = Path(run.output_path) / "run.json"
    if run.status != TrainingRun.Status.FINISHED or not adapters or not all(p.is_file() for p in adapters):
        raise UserInputError(
            f"training run {run.pk} has no adapter files: they are written when a run finishes."
        )
    return [*adapters, *([run_json] if run_json.is_file() else [])]


def training_run_adapter_path(*, run: TrainingRun) -> str:
    """What generation loads from a finished run, as its method decides: TI's embedding file (its header names
    the token); for every weight method the output folder (the diffusers file of LoRA and DoRA, the peft
    adapter folder of LoHa, LoKr and OFT)."""
    if run.method != TrainingRun.Method.TI:
        return run.output_path
    embeddings = sorted(path for name, path in (run.files or {}).items() if name.endswith(".safetensors"))
    if not embeddings:
        raise UserInputError(f"training run {run.pk} recorded no .safetensors embedding.")
    return embeddings[0]


def training_run_adapters_zip(*, run: TrainingRun, stream: BinaryIO) -> None:
    """Write the run's adapters in every format it saved (diffusers, kohya, A1111), run.json and a README."""
    files = training_run_adapter_files(run=run)
    folder = f"training-run-{run.pk}-{run.method}"
    readme = [f"Training run {run.pk} ({run.get_method_display()}), best epoch {run.best_epoch}.", ""]
    for path in files:
        if path.name in ADAPTER_FORMATS or path.suffix in WEIGHT_SUFFIXES:
            readme.append(f"{path.name}: {ADAPTER_FORMATS.get(path.name, A1111_EMBEDDING)}")
    readme.append("run.json: the configuration, base model, dataset, versions and every epoch's losses.")
    with zipfile.ZipFile(stream, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for path in files:
            archive.write(path, f"{folder}/{path.name}")
        archive.writestr(f"{folder}/README.txt", "\n".join(readme) + "\n")
