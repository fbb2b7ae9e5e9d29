"""Benchmark: one training on 1 process and on N processes with the same global batch (CPU processes or GPUs).

Each row is a fresh `torchrun --standalone --nproc_per_node N` of the training loop: the tiny model (or,
with --gpu, one process per GPU), synthetic images, LoRA then TI. On CPU the machine's cores are split
evenly between the processes (or --threads each), so the rows compare the same hardware used two ways.
    .venv/bin/python benchmarks/distributed.py [--processes 1 2] [--images 32] [--epochs 4] [--threads N]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from trainer.engine.config import build_config  # noqa: E402
from trainer.engine.dataset import PrepareConfig, prepare_dataset  # noqa: E402
from trainer.engine.synthetic import SyntheticDatasetConfig, make_synthetic_dataset  # noqa: E402

TI = {"placeholder_token": "<bench-style>", "initializer_token": "style"}


def run(root: Path, name: str, processes: int, threads: int, config: dict, dataset: Path) -> dict:
    """Train `config` on `processes` processes in a fresh launch; run.json and the launch's wall time."""
    request = root / f"{name}.json"
    output = root / name
    request.write_text(
        json.dumps(
            {
                "dataset": str(dataset),
                "output": str(output),
                "method": config["method"],
                "config": config,
                "resume": False,
            }
        )
    )
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc_per_node={processes}",
        "-m",
        "trainer.engine.launch",
        str(request),
    ]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONPATH": str(REPO)}
    start = time.perf_counter()
    subprocess.run(command, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wall = time.perf_counter() - start
    return {**json.loads((output / "run.json").read_text()), "wall_s": wall}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--processes", type=int, nargs="+", default=[1, 2], help="Process counts to compare.")
    parser.add_argument("--global-batch", type=int, default=2, help="Samples per step over all processes.")
    parser.add_argument("--images", type=int, default=32, help="Synthetic images (a tenth for validation).")
    parser.add_argument("--resolution", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=4, help="Epochs per run; the first is warm-up.")
    parser.add_argument(
        "--threads",
        type=int,
        help="Torch threads per process (default: the cores split between the processes).",
    )
    parser.add_argument(
        "--gpu", action="store_true", help="One process per GPU, bf16 (default: CPU processes)."
    )
    args = parser.parse_args()
    import torch

    from trainer.engine.tiny_model import TinyModelConfig, build_tiny_model

    cores = os.cpu_count() or 1
    with tempfile.TemporaryDirectory(prefix="peftlab-bench-") as folder:
        root = Path(folder)
        model = build_tiny_model(root / "tiny", TinyModelConfig()).path
        make_synthetic_dataset(root / "source", SyntheticDatasetConfig(count=args.images, size=96))
        dataset = root / "dataset"
        prepare_dataset(
            root / "source",
            dataset,
            PrepareConfig(resolution=args.resolution, min_size=64, val_fraction=0.1),
        )
        device = torch.cuda.get_device_name() if args.gpu else f"CPU, {cores} cores"
        print(
            f"{device}; tiny model, {args.resolution}x{args.resolution}, {args.images} images, "
            f"global batch {args.global_batch}, {args.epochs} epochs (first is warm-up)"
        )
        print(
            f"{'method':<6} {'processes':>9} {'batch/proc':>10} {'threads/proc':>12} {'samples/s':>10} {'wall s':>7}"
        )
        for method in ("lora", "ti"):
            for processes in args.processes:
                if args.global_batch % processes:
                    raise SystemExit(f"--global-batch {args.global_batch} does not split over {processes}.")
                config = build_config(
                    method,
                    model=str(model),
                    resolution=args.resolution,
                    epochs=args.epochs,
                    batch_size=args.global_batch // processes,
                    mixed_precision="bf16" if args.gpu else "no",
                    cache_dir=str(root / "cache"),
                    **(TI if method == "ti" else {}),
                ).to_dict()
                threads = args.threads or max(1, cores // processes)
                record = run(root, f"{method}-{processes}", processes, threads, config, dataset)
                warm = record["epochs"][1:] or record["epochs"]
                speed = sum(epoch["samples_per_s"] for epoch in warm) / len(warm)
                print(
                    f"{method:<6} {record['processes']:>9} {args.global_batch // processes:>10} {threads:>12} "
                    f"{speed:>10.2f} {record['wall_s']:>7.1f}",
                    flush=True,
                )


if __name__ == "__main__":
    main()
