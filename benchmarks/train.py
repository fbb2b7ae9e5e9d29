"""Benchmark: training speed of LoRA and Textual Inversion through peftlab's one loop.

CPU (default): the tiny model at 64x64, each method with and without the latent/text caches.
GPU (--gpu): an SD-1.5-shaped UNet, VAE and text encoder with random weights (built from configs, nothing
downloaded) at 512x512 in bf16, batch sizes 1, 4 and 8: samples/s, peak memory and utilisation.
    .venv/bin/python benchmarks/train.py [--gpu] [--images N] [--epochs N]
"""

from __future__ import annotations

import argparse
import gc
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from trainer.engine.config import build_config  # noqa: E402
from trainer.engine.dataset import PrepareConfig, prepare_dataset  # noqa: E402
from trainer.engine.loop import train  # noqa: E402
from trainer.engine.synthetic import SyntheticDatasetConfig, make_synthetic_dataset  # noqa: E402

SHARED_DATA = Path(
    os.environ.get("PEFTLAB_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data")
)
UNET_FORWARD_TFLOP = 0.8  # one SD-1.5 UNet forward at 64x64 latents (the issue's figure)
TRAIN_FACTOR = 3  # forward + backward ~ 3 forwards (LoRA: input and adapter grads; TI: input grads)
TI = {"placeholder_token": "<bench-style>", "initializer_token": "style"}


def make_dataset(root: Path, images: int, resolution: int) -> Path:
    """`images` captioned images prepared at `resolution`: the real landmarks if present, else synthetic."""
    source = root / "source"
    source.mkdir()
    ghibli = SHARED_DATA / "ghibli-landmarks"
    real = sorted(ghibli.glob("*.jpg"))[:images] if ghibli.is_dir() else []
    if len(real) == images:
        for image in real:
            (source / image.name).symlink_to(image)
            (source / f"{image.stem}.txt").symlink_to(image.with_suffix(".txt"))
    else:
        make_synthetic_dataset(source, SyntheticDatasetConfig(count=images, size=max(96, resolution)))
    output = root / "dataset"
    prepare_dataset(
        source, output, PrepareConfig(resolution=resolution, min_size=min(64, resolution), val_fraction=0.1)
    )
    return output


def measure(dataset: Path, root: Path, name: str, method: str, **options) -> dict:
    """Train once; the speed of the epochs after the first (warm-up: compilation, allocator, caches)."""
    extra = TI if method == "ti" else {}
    config = build_config(method, **options, **extra)
    result = train(dataset, root / name, config)
    warm = result.epochs[1:] or result.epochs
    return {
        "samples_per_s": sum(epoch.samples_per_s for epoch in warm) / len(warm),
        "cache_s": result.seconds["cache"],
        "load_s": result.seconds["load"],
    }


def cpu_benchmark(args: argparse.Namespace) -> None:
    import torch

    from trainer.engine.tiny_model import TinyModelConfig, build_tiny_model

    with tempfile.TemporaryDirectory(prefix="peftlab-bench-") as folder:
        root = Path(folder)
        model = build_tiny_model(root / "tiny", TinyModelConfig()).path
        dataset = make_dataset(root, args.images, 64)
        print(
            f"CPU, tiny model, 64x64, {args.images} images, batch size 2, {args.epochs} epochs, "
            f"torch threads {torch.get_num_threads()}"
        )
        print(f"{'method':<6} {'caches':<7} {'samples/s':>10} {'cache s':>8}")
        for method in ("lora", "ti"):
            for cache in (True, False):
                figures = measure(
                    dataset,
                    root,
                    f"{method}-{cache}",
                    method,
                    model=str(model),
                    resolution=64,
                    epochs=args.epochs,
                    batch_size=2,
                    cache=cache,
                    cache_dir=str(root / f"cache-{method}"),
                )
                print(
                    f"{method:<6} {'on' if cache else 'off':<7} {figures['samples_per_s']:>10.2f} "
                    f"{figures['cache_s']:>8.2f}"
                )


def gpu_benchmark(args: argparse.Namespace) -> None:
    import torch

    from trainer.engine.tiny_model import TinyModelConfig, build_tiny_model

    if not torch.cuda.is_available():
        raise SystemExit("--gpu needs a CUDA device; none is visible.")
    name = torch.cuda.get_device_name()
    with tempfile.TemporaryDirectory(prefix="peftlab-bench-") as folder:
        root = Path(folder)
        start = time.perf_counter()
        model = build_tiny_model(
            root / "sd15-shaped", TinyModelConfig(shape="sd15", text_width=768, image_size=512)
        ).path
        dataset = make_dataset(root, args.images, 512)
        print(
            f"{name}; SD-1.5-shaped random weights, 512x512, bf16, {args.images} images "
            f"(setup {time.perf_counter() - start:.0f} s)"
        )
        print(
            f"{'method':<6} {'batch':>5} {'samples/s':>10} {'peak GiB':>9} {'util %':>7} {'10 ep. s':>9} {'15 ep. s':>9}"
        )
        for method in ("lora", "ti"):
            for batch_size in args.batch_sizes:
                gc.collect()  # the previous run's models, so that the peak is this run's own
                torch.cuda.empty_cache()
                torch.cuda.reset_peak_memory_stats()
                figures = measure(
                    dataset,
                    root,
                    f"{method}-{batch_size}",
                    method,
                    model=str(model),
                    resolution=512,
                    epochs=args.epochs,
                    batch_size=batch_size,
                    mixed_precision="bf16",
                    cache_dir=str(root / "cache"),
                )
                speed = figures["samples_per_s"]
                peak = torch.cuda.max_memory_allocated() / 2**30
                utilisation = speed * TRAIN_FACTOR * UNET_FORWARD_TFLOP / args.peak_tflops * 100
                print(
                    f"{method:<6} {batch_size:>5} {speed:>10.1f} {peak:>9.1f} {utilisation:>7.1f} "
                    f"{10 * args.images / speed:>9.1f} {15 * args.images / speed:>9.1f}",
                    flush=True,
                )
        print(
            f"util %: samples/s x {TRAIN_FACTOR} x {UNET_FORWARD_TFLOP} TFLOP / {args.peak_tflops:.0f} TFLOP/s peak; "
            "10/15 ep. s: projected training seconds for 10 (LoRA) / 15 (TI) epochs of these images."
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gpu", action="store_true", help="Run the SD-1.5-shaped GPU benchmark instead.")
    parser.add_argument("--images", type=int, help="Images in the dataset (default 16 on CPU, 115 on GPU).")
    parser.add_argument("--epochs", type=int, default=3, help="Epochs per measurement; the first is warm-up.")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 4, 8], help="GPU batch sizes.")
    parser.add_argument(
        "--peak-tflops",
        type=float,
        default=989.0,
        help="The GPU's dense bf16 peak in TFLOP/s (H100/H200 SXM: 989).",
    )
    args = parser.parse_args()
    args.images = args.images or (115 if args.gpu else 16)
    logging.disable(logging.INFO)  # the per-epoch log lines; the tables are the output
    if args.gpu:
        gpu_benchmark(args)
    else:
        cpu_benchmark(args)


if __name__ == "__main__":
    main()
