"""The small progress protocol every engine reports through (pure Python, no Django)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TextIO

from tqdm.auto import tqdm


@dataclass(frozen=True)
class Progress:
    """One progress report: `done` of `total` units of `stage`, with optional metrics.

    overall: the fraction (0 to 1) of the whole job done, where the engine knows it (epochs x steps, images
    of every arm); a stage such as "epoch 13/40" alone would read 100 % at its end.
    """

    stage: str
    done: int
    total: int | None = None
    message: str = ""
    metrics: dict[str, float] = field(default_factory=dict)
    overall: float | None = None


ProgressCallback = Callable[[Progress], None]


def ignore_progress(_: Progress) -> None:
    """A callback that drops every report."""


class TqdmProgress:
    """A callback that shows one tqdm bar per stage, with the metrics as the bar's postfix."""

    def __init__(self, stream: TextIO | None = None, disable: bool = False, mininterval: float = 0.1) -> None:
        self._stream = stream
        self._disable = disable
        self._mininterval = mininterval  # seconds between redraws
        self._bar: tqdm | None = None
        self._stage: str | None = None

    def __call__(self, report: Progress) -> None:
        if report.stage != self._stage:
            self.close()
            self._stage = report.stage
            self._bar = tqdm(
                total=report.total,
                desc=report.stage,
                file=self._stream,
                disable=self._disable,
                leave=False,
                mininterval=self._mininterval,
            )
        postfix = {k: f"{v:.4g}" for k, v in report.metrics.items()}
        if report.overall is not None:
            postfix["run"] = f"{report.overall:.0%}"
        if postfix:
            self._bar.set_postfix(postfix, refresh=False)
        # update() rather than setting n, so tqdm's rate and time estimates stay right.
        self._bar.update(report.done - self._bar.n)

    def close(self) -> None:
        """Close the current bar, if any."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None
            self._stage = None
