"""One training on N processes started by `accelerate launch` from a parent that records it (a job worker).

The parent calls `launch_training`: it starts the processes, hands each the run as a JSON file, and
turns the main process's reports (one JSON object a line on stdout) back into progress and epoch calls.
The processes run this module (`python -m trainer.engine.launch REQUEST`).
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from peftlab.errors import UserInputError
from peftlab.progress import Progress, ProgressCallback, ignore_progress
from trainer.engine.config import TrainingConfig, build_config
from trainer.engine.distributed import is_main_process
from trainer.engine.loop import TrainingResult, train
from trainer.engine.results import EpochResult

REPORT = "peftlab-report "  # the prefix of the main process's report lines on stdout
STDERR_LINES = 20  # how much of the processes' stderr a failure shows
# A Python exception's last line, `RuntimeError: ...` or `peftlab.errors.UserInputError: ...`.
EXCEPTION_LINE = re.compile(r"^\w+(\.\w+)*(Error|Exception|Interrupt)\b")


def first_errors(stderr: str) -> list[str]:
    """The exception lines of the processes' stderr, each once, in the order printed.

    When one process of a group fails, the others fail next in their pending collective (gloo: "Connection
    closed by peer", often in backward's all-reduce) and the launcher prints its summary: those fill the tail
    of stderr, so a failure's cause is its first exception line, not its last.
    """
    return list(dict.fromkeys(line for line in stderr.splitlines() if EXCEPTION_LINE.match(line)))


def free_port() -> int:
    """A TCP port nobody listens on now, for the process group's rendezvous."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def launch_command(processes: int, request: Path) -> list[str]:
    """`accelerate launch` of this module on `processes` local processes (one per GPU, or CPU processes)."""
    return [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        # Accelerate's multi-process launcher (torchrun) also starts CPU processes; they form a gloo group.
        "--multi_gpu",
        f"--num_processes={processes}",
        "--num_machines=1",
        # No --mixed_precision: each process's Accelerator takes the run's precision from its config.
        "--dynamo_backend=no",
        f"--main_process_port={free_port()}",  # not 29500: several jobs or test runs at once must not collide
        "-m",
        "trainer.engine.launch",
        str(request),
    ]


def launch_training(
    dataset: Path,
    output: Path,
    config: TrainingConfig,
    *,
    processes: int,
    resume: bool = False,
    progress: ProgressCallback = ignore_progress,
    on_epoch: Callable[[EpochResult], None] | None = None,
    on_warning: Callable[[str], None] | None = None,
) -> TrainingResult:
    """Train like `loop.train`, on `processes` processes; returns the main process's `TrainingResult`."""
    with tempfile.TemporaryDirectory(prefix="peftlab-launch-") as folder:
        request = Path(folder) / "request.json"
        request.write_text(
            json.dumps(
                {
                    "dataset": str(dataset),
                    "output": str(output),
                    "method": config.method,
                    "config": config.to_dict(),
                    "resume": resume,
                }
            ),
            encoding="utf-8",
        )
        with open(Path(folder) / "stderr.txt", "w+", encoding="utf-8") as stderr:
            # A session of its own, so that a cancel stops the launcher and every training process.
            process = subprocess.Popen(
                launch_command(processes, request),
                stdout=subprocess.PIPE,
                stderr=stderr,
                text=True,
                start_new_session=True,
            )
            reports: dict[str, Any] = {}
            try:
                for line in process.stdout:
                    if not line.startswith(REPORT):
                        continue
                    report = json.loads(line.removeprefix(REPORT))
                    if "progress" in report:
                        progress(Progress(**report["progress"]))
                    elif "epoch" in report and on_epoch is not None:
                        on_epoch(EpochResult(**report["epoch"]))
                    elif "warning" in report and on_warning is not None:
                        on_warning(report["warning"])
                    reports.update(report)
                process.wait()
            finally:
                if process.poll() is None:  # the parent was cancelled or interrupted
                    os.killpg(process.pid, signal.SIGTERM)
                    process.wait()
            if "error" in reports:
                raise UserInputError(reports["error"])
            if process.returncode != 0 or "result" not in reports:
                stderr.seek(0)
                text = stderr.read()
                tail = "".join(text.splitlines(keepends=True)[-STDERR_LINES:])
                errors = "".join(f"{line}\n" for line in first_errors(text))
                raise RuntimeError(
                    f"the {processes} training processes failed (exit {process.returncode}); their errors, "
                    f"first first:\n{errors}stderr's last lines:\n{tail}"
                )
    result = reports["result"]
    return TrainingResult(
        **{**result, "output": Path(result["output"]), "epochs": [EpochResult(**e) for e in result["epochs"]]}
    )


def report(**fields: Any) -> None:
    """One report line on stdout, from the main process only."""
    if is_main_process():
        print(REPORT + json.dumps(fields, default=str), flush=True)


def main(request_path: str) -> None:
    """Train the request as one of the launched processes; the main process reports."""
    request = json.loads(Path(request_path).read_text(encoding="utf-8"))
    config = build_config(request["method"], request["config"])
    try:
        result = train(
            Path(request["dataset"]),
            Path(request["output"]),
            config,
            resume=request["resume"],
            progress=lambda progress: report(progress=asdict(progress)),
            on_epoch=lambda epoch: report(epoch=asdict(epoch)),
            on_warning=lambda text: report(warning=text),
        )
    except UserInputError as error:
        report(error=str(error))
        sys.exit(1)
    report(result=asdict(result))


if __name__ == "__main__":
    main(sys.argv[1])
