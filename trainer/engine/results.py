"""What one epoch of training measured, shared by the loop, its exports and the run records."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class EpochResult:
    """One finished epoch."""

    epoch: int  # 1-based; 0 is the untrained adapter's validation loss, before the first step
    train_loss: float | None  # None for epoch 0
    val_loss: float
    seconds: float  # wall time of the whole epoch: its steps, validation and saves
    samples_per_s: float
    # The parts of `seconds` (absent, 0, in the checkpoints of older versions).
    train_seconds: float = 0.0  # the training steps
    validation_seconds: float = 0.0  # the validation loss
    save_seconds: float = 0.0  # writing and proving the weights files, and the checkpoint
