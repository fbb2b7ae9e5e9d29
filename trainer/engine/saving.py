"""Saves off the training's critical path: an epoch's files are written and proven on a background thread
while the next epoch trains, with the guarantees of a save made in line.

The training thread copies what a save needs (the trained tensors to the CPU, the checkpoint's state) before
the next step changes it, then hands the save to `BackgroundSaves`. One save is in flight at a time: the next
save, the run's end, early stopping and any error first wait for it, and a failed save's error is raised on
the training thread there, so the run stops with its one line. The save itself is the in-line one: each
folder replaced only by a proven staging folder, the checkpoint written only once its epoch's files are in
place (a resume never points at unproven weights), a crash mid-proof leaving the previous files.
"""

from __future__ import annotations

import threading
from collections.abc import Callable


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
