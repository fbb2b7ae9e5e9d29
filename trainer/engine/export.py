"""A run's readable outputs: metrics.csv, loss.png and run.json, each written atomically; the base model's
fingerprint and the metadata every weights file carries."""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict
from pathlib import Path
from typing import Any

from peftlab.errors import UserInputError
from peftlab.files import write_atomic
from peftlab.versions import package_versions
from trainer.engine.results import EpochResult

WEIGHT_SUFFIXES = (".safetensors", ".bin")


def write_metrics_csv(path: Path, epochs: list[EpochResult]) -> None:
    """metrics.csv: epoch, train_loss, val_loss, seconds, samples_per_s and the seconds of each part of the epoch."""
    import pandas as pd

    frame = pd.DataFrame([asdict(epoch) for epoch in epochs], columns=list(EpochResult.__dataclass_fields__))
    write_atomic(path, lambda temporary: frame.to_csv(temporary, index=False, float_format="%.6g"))


def write_loss_plot(path: Path, epochs: list[EpochResult], best_epoch: int | None, title: str) -> None:
    """loss.png: training and validation loss per epoch, the best epoch marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    figure, axes = plt.subplots(figsize=(6, 4), dpi=100)
    numbers = [epoch.epoch for epoch in epochs]
    train_losses = [math.nan if epoch.train_loss is None else epoch.train_loss for epoch in epochs]
    axes.plot(numbers, train_losses, marker="o", label="training loss")
    axes.plot(numbers, [epoch.val_loss for epoch in epochs], marker="o", label="validation loss")
    if best_epoch is not None:
        best = next(epoch for epoch in epochs if epoch.epoch == best_epoch)
        axes.axvline(best_epoch, color="grey", linestyle="--", linewidth=1)
        axes.scatter(
            [best_epoch],
            [best.val_loss],
            s=120,
            facecolors="none",
            edgecolors="red",
            zorder=3,
            label=f"best epoch {best_epoch}",
        )
    axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes.set_xlabel("epoch")
    axes.set_ylabel("loss (MSE of predicted noise)")
    axes.set_title(title)
    axes.legend()
    figure.tight_layout()
    write_atomic(path, lambda temporary: figure.savefig(temporary, format="png"))
    plt.close(figure)


def write_run_json(path: Path, record: dict[str, Any]) -> None:
    """run.json: config, versions, dataset manifest hash, timings and results."""
    text = json.dumps({**record, "versions": package_versions()}, indent=2, sort_keys=True, default=str)
    write_atomic(path, lambda temporary: temporary.write_text(text + "\n", encoding="utf-8"))


def weights_sha256(folder: Path) -> str:
    """SHA-256 of a model part's weights: of its one weights file (as `sha256sum` prints it), or of the
    `name sha256` lines of several."""
    from trainer.engine.dataset import sha256_file

    files = sorted(
        path for path in folder.iterdir() if path.is_file() and path.name.endswith(WEIGHT_SUFFIXES)
    )
    if not files:
        raise UserInputError(f"{folder} holds no weights file; give a complete diffusers model folder.")
    if len(files) == 1:
        return sha256_file(files[0])
    lines = "".join(f"{path.name} {sha256_file(path)}\n" for path in files)
    return hashlib.sha256(lines.encode()).hexdigest()


# (folder, (file name, size, modification time) of each weights file) -> fingerprint, for this process.
_FINGERPRINTS: dict[tuple[str, tuple[tuple[str, int, int], ...]], dict[str, str]] = {}


def weights_stamp(folder: Path) -> tuple[tuple[str, int, int], ...]:
    """Name, size and modification time of every weights file of the UNet and text encoder (cheap to read)."""
    stamps = []
    for part in ("unet", "text_encoder"):
        if (folder / part).is_dir():
            for path in sorted((folder / part).iterdir()):
                if path.is_file() and path.name.endswith(WEIGHT_SUFFIXES):
                    stat = path.stat()
                    stamps.append((f"{part}/{path.name}", stat.st_size, stat.st_mtime_ns))
    return tuple(stamps)


def base_model_fingerprint(model: str) -> dict[str, str]:
    """The base model's name, family (sd15, sdxl) and the SHA-256 of its UNet and text-encoder weights,
    hashed once per process for as long as the files keep their size and modification time."""
    from trainer.engine.families import detect_family

    folder = Path(model)
    if not folder.is_dir():
        from huggingface_hub import snapshot_download

        # A hub id trains from the local hub cache; hash the snapshot it loaded.
        folder = Path(snapshot_download(model, local_files_only=True))
    key = (f"{model}\0{folder.resolve()}", weights_stamp(folder))
    if key not in _FINGERPRINTS:
        _FINGERPRINTS[key] = {
            "base_model_name_or_path": model,
            "base_model_family": detect_family(model).name,
            "base_unet_sha256": weights_sha256(folder / "unet"),
            "base_text_encoder_sha256": weights_sha256(folder / "text_encoder"),
        }
    return dict(_FINGERPRINTS[key])


def add_safetensors_metadata(path: Path, metadata: dict[str, str]) -> None:
    """Rewrite a safetensors file with `metadata` added to the header it has."""
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    with safe_open(path, framework="pt") as handle:
        existing = handle.metadata() or {}
    tensors = load_file(path)
    write_atomic(path, lambda temporary: save_file(tensors, temporary, metadata={**existing, **metadata}))
