"""Writes that a killed process can never leave half-done: files and folders renamed into place.

Django-free, so engines may use it too.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path


def _temporary_beside(path: Path) -> Path:
    """An empty temporary file in `path`'s folder (same file system, so the final rename is atomic)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}-", suffix=path.suffix)
    os.close(handle)
    return Path(temporary)


def write_files_atomic(writers: Mapping[Path, Callable[[Path], None]]) -> None:
    """Call each writer on a temporary file beside its path, then rename them all into place.

    Either every file is replaced or, if a writer fails, none is and no temporary file is left.
    """
    temporaries: dict[Path, Path] = {}
    try:
        for path, write in writers.items():
            temporaries[path] = _temporary_beside(Path(path))
            write(temporaries[path])
            # mkstemp creates 0600; outputs are shared with other users and machines, as an ordinary file is.
            os.chmod(temporaries[path], 0o644)
        for path, temporary in temporaries.items():
            os.replace(temporary, path)
    finally:
        for temporary in temporaries.values():
            temporary.unlink(missing_ok=True)


def write_atomic(path: Path, write: Callable[[Path], None]) -> None:
    """Call `write` on a temporary file beside `path`, then rename it into place."""
    write_files_atomic({path: write})


def write_bytes_atomic(files: Mapping[Path, bytes]) -> None:
    """Write each file's bytes, all renamed into place together (see `write_files_atomic`)."""
    write_files_atomic(
        {path: (lambda temporary, data=data: temporary.write_bytes(data)) for path, data in files.items()}
    )


def swap_folder(staging: Path, output: Path) -> None:
    """Replace the folder `output` by `staging` with renames, removing the old one only once the new is in place."""
    old = output.with_name(f".{output.name}-old-{os.getpid()}")
    shutil.rmtree(old, ignore_errors=True)
    if output.exists():
        output.rename(old)
    staging.rename(output)
    shutil.rmtree(old, ignore_errors=True)
