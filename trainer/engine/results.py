"""What one epoch of training measured, shared by the loop, its exports and the run records."""

from dataclasses import dataclass


@dataclass(frozen=True)
class EpochResult:
    """One finished epoch."""

    epoch: int  # 1-based
    train_loss: float
    val_loss: float
    seconds: float
    samples_per_s: float
