"""What one epoch of training measured, shared by the loop, its exports and the run records."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class EpochResult:
    """One finished epoch."""

    epoch: int  # 1-based; 0 is the untrained adapter's validation loss, before the first step
    train_loss: float | None  # None for epoch 0
    val_loss: float
    seconds: float
    samples_per_s: float
