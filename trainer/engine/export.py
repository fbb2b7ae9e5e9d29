"""A run's readable outputs: metrics.csv, loss.png and run.json, each written atomically."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

from peftlab.files import write_atomic
from peftlab.versions import package_versions
from trainer.engine.results import EpochResult


def write_metrics_csv(path: Path, epochs: list[EpochResult]) -> None:
    """metrics.csv: epoch, train_loss, val_loss, seconds, samples_per_s."""
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
    axes.plot(numbers, [epoch.train_loss for epoch in epochs], marker="o", label="training loss")
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
