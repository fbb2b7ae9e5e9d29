"""Processes that share one training: the Accelerator every process builds, and the checks around it.

`torchrun` and `accelerate launch` start N processes and tell each its rank through the environment
(`WORLD_SIZE`, `RANK`, `LOCAL_RANK`). Accelerate forms a process group from that environment on CUDA
(NCCL) by itself, but on a machine without CUDA only when asked for the CPU (gloo); without one, each
process would train a copy of the run into the same folder. `make_accelerator` always asks for the
device there is, and stops with one line when the processes did not join one group.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from peftlab.errors import UserInputError


def launched_processes(environ: Mapping[str, str] = os.environ) -> int:
    """How many processes the launcher (`torchrun`, `accelerate launch`, MPI) says it started; 1 without one."""
    for name in ("WORLD_SIZE", "OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "MV2_COMM_WORLD_SIZE"):
        if environ.get(name, "").isdigit():
            return int(environ[name])
    return 1


def check_process_group(joined: int, environ: Mapping[str, str] = os.environ) -> None:
    """Refuse to train when the launcher started more processes than joined the group (each would train a copy)."""
    launched = launched_processes(environ)
    if launched != joined:
        raise UserInputError(
            f"the launcher started {launched} processes but {joined} joined the process group, so each "
            "would train a copy of the run; launch with `accelerate launch` or `torchrun` on one kind of "
            "device (all GPUs, or all CPUs) and check that every process reaches MASTER_ADDR:MASTER_PORT."
        )


def make_accelerator(mixed_precision: str) -> Any:
    """The process's Accelerator: one group over every launched process, gloo on CPU and NCCL on CUDA.

    Accelerate keeps one mixed precision per process (its state is process-wide), so a process that
    trained in one precision refuses another; `manage.py rqworker` forks a fresh process per job.
    """
    import torch
    from accelerate import Accelerator

    # Accelerate forms a CPU (gloo) group only when asked for the CPU; on CUDA it picks NCCL itself.
    cpu = launched_processes() > 1 and not torch.cuda.is_available()
    try:
        accelerator = Accelerator(cpu=cpu, mixed_precision=mixed_precision)
    except ValueError as error:
        if "already been initialized" not in str(error):
            raise
        raise UserInputError(
            f"this process already trained in another precision than --mixed-precision {mixed_precision}, "
            "and Accelerate keeps one per process; train in a new process (each `rqworker` job is one)."
        ) from None
    check_process_group(accelerator.num_processes)
    return accelerator


def is_main_process(environ: Mapping[str, str] = os.environ) -> bool:
    """Whether this is the main process of a launch (`torchrun`, `accelerate launch`, MPI) or the only process."""
    # Read the launcher's environment rather than start Accelerate's state before the Accelerator does.
    for name in ("RANK", "OMPI_COMM_WORLD_RANK", "PMI_RANK", "MV2_COMM_WORLD_RANK"):
        if environ.get(name, "").isdigit():
            return int(environ[name]) == 0
    return True
