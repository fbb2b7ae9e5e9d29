"""Saves off the training's critical path: an epoch's files are written and proven on a background thread
while the next epoch trains, with the guarantees of a save made in line.

The training thread copies what a save needs before the next step changes it (the trained tensors into a
`TrainedSnapshot`, the checkpoint's state), then hands the save to `BackgroundSaves`. One save is in flight at a time: the next
save, the run's end, early stopping and any error first wait for it, and a failed save's error is raised on
the training thread there, so the run stops with its one line. The save itself is the in-line one: each
folder replaced only by a proven staging folder, the checkpoint written only once its epoch's files are in
place (a resume never points at unproven weights), a crash mid-proof leaving the previous files.
"""

from __future__ import annotations

import copy
import threading
from collections.abc import Callable

import torch


class BackgroundSaves:
    """At most one save running on a thread of its own; `wait()` blocks until it ends and raises its error."""

    def __init__(self) -> None:
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    def submit(self, save: Callable[[], None]) -> None:
        """Run `save` on a new thread, once the save before it has ended (raising its error, if it failed)."""
        self.wait()
        # A daemon: a process killed or interrupted mid-save leaves the previous files, as in line.
        self._thread = threading.Thread(target=self._run, args=(save,), name="peftlab-save", daemon=True)
        self._thread.start()

    def _run(self, save: Callable[[], None]) -> None:
        try:
            save()
        except BaseException as error:  # handed to the training thread by wait()
            self._error = error

    def wait(self) -> None:
        """Block until the save in flight, if any, has ended; raise its error on this (the training) thread."""
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        error, self._error = self._error, None
        if error is not None:
            raise error


class TrainedSnapshot:
    """A second module tree over the trained module's frozen tensors (shared, never copied) whose trainable
    tensors are copies, refreshed by `take()`: a method saves from it as from the trained module, while the
    next steps change the trained module's own tensors."""

    def __init__(self, module: torch.nn.Module) -> None:
        # deepcopy reuses what its memo already holds: the frozen parameters and buffers are shared.
        frozen = [tensor for tensor in [*module.parameters(), *module.buffers()] if not tensor.requires_grad]
        self.module = copy.deepcopy(module, memo={id(tensor): tensor for tensor in frozen})
        self.pairs = [
            (copied, trained)
            for copied, trained in zip(self.module.parameters(), module.parameters(), strict=True)
            if trained.requires_grad
        ]

    def take(self) -> torch.nn.Module:
        """The snapshot with the trained module's current trainable values (no save may be reading it)."""
        with torch.no_grad():
            for copied, trained in self.pairs:
                copied.copy_(trained)
        return self.module
