"""Benchmark: training speed of LoRA and Textual Inversion through peftlab's loop against a reference loop.

The reference loop does per step what the diffusers example trainers (`train_text_to_image_lora.py`,
`textual_inversion.py`) do: decode and resize each source image and tokenize its caption, VAE encode and
text encode, no caches, default AdamW, a loss read back for the progress bar; TI trains its whole
embedding table and restores the frozen rows after each step. Same model, data, batch, precision and
LoRA/TI setup on both sides. A third loop runs only the model passes no trainer of the method can skip
(LoRA: UNet forward and backward; TI: text encoder and UNet forward, backward to the new rows): its rate
over the reference's is the bound, the highest ratio any trainer doing the same arithmetic could reach.

CPU (default): the tiny model with a 768-wide text encoder, 64x64, 22 images, batch 2, float32. One
peftlab epoch, then one reference epoch and one model-only epoch, interleaved; the median of the epochs
after the first of each.
GPU (--gpu): SD-1.5-shaped random weights (built from configs, nothing downloaded) at 512x512 in bf16:
LoRA and TI at batch 1/4/8 with and without --compile, the reference and model-only loops at batch 4, and
generation against a plain pipeline loop in the same dtype; then SDXL base 1.0-shaped random weights at
1024x1024: LoRA at batch 1/4 without and with gradient checkpointing, and SDXL generation against a plain
StableDiffusionXLPipeline loop; samples/s (images/s), peak memory and model FLOP utilisation in one table.
Order: SD-1.5 without --compile, SD-1.5 generation, SDXL, then --compile. Each row is boxed to --row-seconds
and to what is left of --budget-seconds; a row past either, out of GPU memory or (on a GPU) failing prints a
line saying why it was skipped, and the next rows go on.
--dry-run runs the --gpu table's code end to end with tiny sizes (on CPU where there is no GPU, in bf16).
CPU --shape sd15: SD-1.5's layer sizes with random weights, peftlab's epochs only (the reference loops would
take hours); with the tiny shape, the same epoch split is printed under the rates. --shape sdxl-tiny: the
tiny SDXL-shaped model (two text encoders, text_time UNet), peftlab's epochs only. --inline-saves: the
epochs save in line instead of on a background thread.
--methods M [M ...]: instead, each method (lora dora loha lokr oft ti) through peftlab's loop on the same data, each
in a fresh process: samples/s and peak memory per method (GPU: CUDA peak allocated; CPU: the process's peak RSS).
    .venv/bin/python benchmarks/train.py [--gpu | --dry-run] [--shape sd15|sdxl-tiny] [--images N] [--epochs N] [--inline-saves]
    .venv/bin/python benchmarks/train.py --gpu --budget-seconds 450 [--parts sd15 sdxl compile]   # gpu.sh
    .venv/bin/python benchmarks/train.py --methods lora dora loha lokr oft ti [--gpu | --dry-run]
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import functools
import gc
import json
import logging
import multiprocessing
import os
import resource
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from PIL import Image  # noqa: E402

from trainer.engine.config import TrainingConfig, build_config  # noqa: E402
from trainer.engine.data import load_components, read_dataset  # noqa: E402
from trainer.engine.dataset import PrepareConfig, prepare_dataset  # noqa: E402
from trainer.engine.distributed import make_accelerator  # noqa: E402
from trainer.engine.families import tokenize  # noqa: E402
from trainer.engine.loop import resolve_mixed_precision, train  # noqa: E402
from trainer.engine.methods import LoraMethod  # noqa: E402
from trainer.engine.synthetic import SyntheticDatasetConfig, make_synthetic_dataset  # noqa: E402
from trainer.engine.tiny_model import TinyModelConfig, build_tiny_model  # noqa: E402

SHARED_DATA = Path(
    os.environ.get("PEFTLAB_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data")
)
UNET_FORWARD_TFLOP = 0.8  # one SD-1.5 UNet forward of one sample at 64x64 latents (the figure)
# One SDXL base UNet forward of one sample at 128x128 latents (1024 px), 77 tokens: counted with
# torch.utils.flop_counter.FlopCounterMode on the meta device, which counts SD-1.5's at 0.80 the same way.
SDXL_UNET_FORWARD_TFLOP = 6.76
LABEL = 20  # the width of the GPU table's first column
MIN_ROW_SECONDS = 20  # a GPU row with less of the budget left is skipped
SDXL_SETUP_SECONDS = 60  # building SDXL-sized weights (about 14 GB of files) and one row, at the least
STARTED = time.monotonic()  # the GPU run's budget counts from here
PARTS = ("sd15", "sdxl", "compile")  # the GPU table's parts, in the order they run
TRAIN_FACTOR = 3  # forward + backward ~ 3 forwards (LoRA: input and adapter grads; TI: input grads)
TI = {"placeholder_token": "<bench-style>", "initializer_token": "style"}
SD_VOCABULARY = (
    49408  # CLIP's token table in SD 1.x: TI's old whole-table gradient, update and restore scale with it
)
DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16, "no": torch.float32}


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
    # A validation split of at least one image; the benchmark measures the training steps.
    prepare_dataset(
        source, output, PrepareConfig(resolution=resolution, min_size=min(64, resolution), val_fraction=0.1)
    )
    return output


def sd_vocabulary(model: Path, size: int = SD_VOCABULARY) -> None:
    """Grow the model's token table to SD's size with unused entries, so TI's table costs what it does in SD."""
    from transformers import CLIPTextModel

    for name in ("tokenizer.json", "vocab.json"):
        path = model / "tokenizer" / name
        data = json.loads(path.read_text(encoding="utf-8"))
        vocabulary = data["model"]["vocab"] if name == "tokenizer.json" else data
        # After the special tokens; no merge produces these strings, so no caption uses them.
        vocabulary.update({f"<unused-{i}>": i for i in range(len(vocabulary), size)})
        path.write_text(json.dumps(data), encoding="utf-8")
    torch.manual_seed(0)  # the new rows' random initialisation
    encoder = CLIPTextModel.from_pretrained(model / "text_encoder")
    encoder.resize_token_embeddings(size, mean_resizing=False)
    encoder.save_pretrained(model / "text_encoder")


def synchronize() -> None:
    """Wait for queued GPU work, so wall-clock times cover it."""
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def source_images(dataset: Path, images: list[str]) -> list[Path]:
    """The source file each prepared image came from (make_dataset keeps them in `source/` beside it)."""
    return [
        next(p for p in (dataset.parent / "source").glob(f"{Path(name).stem}.*") if p.suffix != ".txt")
        for name in images
    ]


def decode_images(paths: list[Path], resolution: int) -> torch.Tensor:
    """What the example scripts' data loaders do per step: decode each source image, resize, scale to [-1, 1]."""
    arrays = []
    for path in paths:
        with Image.open(path) as opened:
            image = opened.convert("RGB").resize((resolution, resolution), Image.Resampling.BICUBIC)
        arrays.append(np.asarray(image, dtype=np.float32))
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2) / 127.5 - 1.0


class ReferenceLoop:
    """Per step what the diffusers example trainers do; `epoch()` runs one epoch and returns samples/s.

    `model_only_epoch()` runs the bound's loop on the same models: the passes no trainer of the method can skip.
    """

    def __init__(self, dataset: Path, config: TrainingConfig) -> None:
        from diffusers.optimization import get_scheduler

        self.config = config
        self.accelerator = make_accelerator(resolve_mixed_precision(config.mixed_precision)[0])
        device = self.accelerator.device
        self.dtype = DTYPES[self.accelerator.mixed_precision]
        torch.manual_seed(config.seed)
        self.parts = parts = load_components(config.model, self.dtype, torch.float32)
        for module in (parts.vae, parts.unet, parts.text_encoder):
            module.requires_grad_(False)
            module.to(device)
        split = read_dataset(dataset, "train.txt")
        self.sources = source_images(dataset, split.images)
        if config.method == "lora":
            LoraMethod(config).setup(parts)  # add_adapter, adapter in float32: as the LoRA script
            parts.text_encoder.to(self.dtype)
            self.trained = parts.unet
            self.captions = split.captions
        else:
            tokens = config.placeholder_tokens
            parts.tokenizer.add_tokens(tokens)
            initializer = parts.tokenizer.encode(config.initializer_token, add_special_tokens=False)[0]
            self.token_ids = parts.tokenizer.convert_tokens_to_ids(tokens)
            parts.text_encoder.resize_token_embeddings(len(parts.tokenizer), mean_resizing=False)
            table = parts.text_encoder.get_input_embeddings().weight
            with torch.no_grad():
                table[self.token_ids] = table[initializer].clone()
            table.requires_grad_(True)
            self.original = table.detach().clone()
            self.frozen = torch.ones(len(parts.tokenizer), dtype=torch.bool, device=device)
            self.frozen[self.token_ids] = False
            self.trained = parts.text_encoder
            self.captions = [
                config.caption_template.format(token=" ".join(tokens), caption=c) for c in split.captions
            ]
        self.parameters = [p for p in self.trained.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(
            self.parameters, lr=config.learning_rate, weight_decay=config.weight_decay
        )
        steps = config.epochs * -(-len(self.sources) // config.batch_size)
        scheduler = get_scheduler(
            config.lr_scheduler,
            optimizer=optimizer,
            num_warmup_steps=config.warmup_steps,
            num_training_steps=steps,
        )
        self.trained.train()
        self.trained, self.optimizer, self.scheduler = self.accelerator.prepare(
            self.trained, optimizer, scheduler
        )

    def epoch(self) -> float:
        """One shuffled pass over the training images; samples/s."""
        accelerator, parts, config = self.accelerator, self.parts, self.config
        device, scale = accelerator.device, parts.vae.config.scaling_factor
        order = torch.randperm(len(self.sources))
        synchronize()
        start = time.perf_counter()
        for indices in order.split(config.batch_size):
            with accelerator.accumulate(self.trained):
                pixels = decode_images([self.sources[i] for i in indices], config.resolution)
                ids = tokenize(parts.tokenizer, [self.captions[i] for i in indices])
                latents = parts.vae.encode(pixels.to(device, dtype=self.dtype)).latent_dist.sample() * scale
                noise = torch.randn_like(latents)
                steps = parts.noise_scheduler.config.num_train_timesteps
                timesteps = torch.randint(0, steps, (len(latents),), device=device).long()
                noisy = parts.noise_scheduler.add_noise(latents, noise, timesteps)
                states = parts.text_encoder(ids.to(device), return_dict=False)[0]
                prediction = parts.unet(noisy, timesteps, states.to(self.dtype), return_dict=False)[0]
                loss = F.mse_loss(prediction.float(), noise.float(), reduction="mean")
                accelerator.backward(loss)
                if config.method == "lora" and accelerator.sync_gradients:
                    accelerator.clip_grad_norm_(self.parameters, config.max_grad_norm)
                self.optimizer.step()
                self.scheduler.step()
                self.optimizer.zero_grad()
                if config.method == "ti":
                    with torch.no_grad():
                        table = accelerator.unwrap_model(self.trained).get_input_embeddings().weight
                        table[self.frozen] = self.original[self.frozen]
                loss.detach().item()  # the progress bar's loss, every step
        synchronize()
        return len(self.sources) / (time.perf_counter() - start)

    @functools.cache  # noqa: B019 (one loop per run)
    @torch.no_grad()
    def fixed_inputs(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Latents, token ids and (LoRA) text states of every training image, computed once, batch by batch."""
        parts, config, device = self.parts, self.config, self.accelerator.device
        latents, states = [], []
        ids = tokenize(parts.tokenizer, self.captions).to(device)
        for batch in range(0, len(self.sources), config.batch_size):
            chunk = slice(batch, batch + config.batch_size)
            pixels = decode_images(self.sources[chunk], config.resolution).to(device, dtype=self.dtype)
            latents.append(parts.vae.encode(pixels).latent_dist.sample() * parts.vae.config.scaling_factor)
            if config.method == "lora":
                states.append(parts.text_encoder(ids[chunk], return_dict=False)[0].to(self.dtype))
        return torch.cat(latents), ids, torch.cat(states) if states else None

    def model_only_epoch(self) -> float:
        """One pass of only the forward and backward passes the method needs; samples/s.

        No data loading, no encoding a cache can hold, no optimizer, no bookkeeping: LoRA's UNet forward and
        backward on fixed latents and text states; TI's text encoder and UNet forward and backward with the
        gradient reaching only the new rows.
        """
        parts, config, device = self.parts, self.config, self.accelerator.device
        ti = config.method == "ti"
        latents, ids, states = self.fixed_inputs()
        embedding = parts.text_encoder.get_input_embeddings()
        trained = self.parameters
        if ti:
            # A small tensor of the new rows, spliced into the frozen table's output.
            embedding.weight.requires_grad_(False)
            token_ids = torch.tensor(self.token_ids, device=device)
            rows = embedding.weight[token_ids].detach().clone().requires_grad_(True)
            trained = [rows]

            def splice(_: torch.nn.Module, inputs: tuple[torch.Tensor], output: torch.Tensor) -> torch.Tensor:
                match = inputs[0][..., None] == token_ids
                return torch.where(match.any(-1, keepdim=True), rows[match.int().argmax(-1)], output)

            hook = embedding.register_forward_hook(splice)
        order = torch.randperm(len(self.sources))
        synchronize()
        start = time.perf_counter()
        for indices in order.split(config.batch_size):
            noise = torch.randn_like(latents[indices])
            steps = parts.noise_scheduler.config.num_train_timesteps
            timesteps = torch.randint(0, steps, (len(indices),), device=device)
            noisy = parts.noise_scheduler.add_noise(latents[indices], noise, timesteps)
            if ti:
                batch_states = parts.text_encoder(ids[indices], return_dict=False)[0].to(self.dtype)
            else:
                batch_states = states[indices]
            prediction = parts.unet(noisy, timesteps, batch_states, return_dict=False)[0]
            F.mse_loss(prediction.float(), noise.float(), reduction="mean").backward()
            for tensor in trained:
                tensor.grad = None
        synchronize()
        seconds = time.perf_counter() - start
        if ti:
            hook.remove()
            embedding.weight.requires_grad_(True)
        return len(self.sources) / seconds


@dataclass
class Figures:
    """Samples/s after the first epoch: peftlab's and, where run, the reference and model-only loops'; and the
    median peftlab epoch's wall time and its parts (run.json's epoch entries), in seconds."""

    peftlab: float
    reference: float | None
    model_only: float | None
    peak_gib: float
    seconds: float
    train_seconds: float
    validation_seconds: float
    save_seconds: float
    run_seconds: float  # the whole run's training, validation and saving (every epoch, the final files)


def measure(dataset: Path, output: Path, config: TrainingConfig, reference: bool) -> Figures:
    """Train once with peftlab, with a reference and a model-only epoch after each of its epochs when `reference`."""
    reset_peak_memory()
    loop = ReferenceLoop(dataset, config) if reference else None
    rates: list[float] = []
    model_rates: list[float] = []

    def reference_epochs(_: object) -> None:
        if loop is not None:
            rates.append(loop.epoch())
            model_rates.append(loop.model_only_epoch())

    result = train(dataset, output, config, on_epoch=reference_epochs)
    peak = peak_memory_gib()
    warm = [epoch.samples_per_s for epoch in result.epochs[1:]] or [result.epochs[0].samples_per_s]

    def after_first(values: list[float]) -> float | None:
        return statistics.median(values[1:] or values) if values else None

    # The trained epochs after the first (which pays for building the proof pipeline and first calls).
    split = {
        part: after_first([getattr(epoch, part) for epoch in result.epochs[1:]])
        for part in ("seconds", "train_seconds", "validation_seconds", "save_seconds")
    }
    run = sum(result.seconds[phase] for phase in ("train", "validate", "save"))
    return Figures(
        statistics.median(warm), after_first(rates), after_first(model_rates), peak, **split, run_seconds=run
    )


def print_epoch_split(table: dict[str, dict[str, float | None]]) -> None:
    """Where each method's epoch goes: the median epoch's wall time, its parts, the saves' share and epoch/train."""
    print(
        f"{'method':<6} {'epoch s':>8} {'train s':>8} {'validation s':>13} {'save s':>7} "
        f"{'save share':>11} {'epoch/train':>12} {'run s':>8}"
    )
    for method, row in table.items():
        print(
            f"{method:<6} {row['seconds']:>8.3f} {row['train_seconds']:>8.3f} {row['validation_seconds']:>13.3f} "
            f"{row['save_seconds']:>7.3f} {row['save_seconds'] / row['seconds']:>11.3f} "
            f"{row['seconds'] / row['train_seconds']:>12.3f} {row['run_seconds']:>8.1f}"
        )
    print(
        "save share: writing and proving the epoch's files over its wall time (target <= 0.10 at SD-1.5 shape); "
        "epoch/train: wall time over the training steps' time (target <= 1.15); run s: the whole run's train, "
        "validate and save time."
    )


def cpu_benchmark(args: argparse.Namespace) -> None:
    # SD-1.5's shape on a CPU: the reference loops would take hours, so it measures peftlab's epochs alone;
    # the reference loops are SD-1.x loops, so the tiny SDXL model measures peftlab's epochs alone too.
    reference = args.shape == "tiny"
    sdxl = args.shape == "sdxl-tiny"
    text_width = 32 if sdxl else 768
    with tempfile.TemporaryDirectory(prefix="peftlab-bench-") as folder:
        root = Path(folder)
        shape = TinyModelConfig(
            text_width=text_width, shape="tiny" if sdxl else args.shape, family="sdxl" if sdxl else "sd15"
        )
        model = build_tiny_model(root / "tiny", shape).path
        if args.sd_vocabulary:
            sd_vocabulary(model)
        dataset = make_dataset(root, args.images, 64)
        print(
            f"CPU, {args.shape} model with random weights (text width {text_width}, "
            f"{'SD-sized' if args.sd_vocabulary else 'tiny'} token table), 64x64, {args.images} images, batch size 2, "
            f"float32, {args.epochs} {'interleaved ' if reference else ''}epochs each (median of epochs "
            f"2-{args.epochs}), torch threads {torch.get_num_threads()}, "
            f"{'in-line' if args.inline_saves else 'background'} saves"
        )
        if reference:
            print(
                f"{'method':<6} {'peftlab samples/s':>18} {'reference samples/s':>20} {'ratio':>6} "
                f"{'model-only samples/s':>21} {'bound':>6}"
            )
        table: dict[str, dict[str, float | None]] = {}
        for method in ("lora", "ti"):
            options = {"model": str(model), "resolution": 64, "epochs": args.epochs, "batch_size": 2}
            config = build_config(
                method,
                **options,
                mixed_precision="no",
                cache_dir=str(root / "cache"),
                background_saves=not args.inline_saves,
                **extra(method),
            )
            figures = measure(dataset, root / method, config, reference=reference)
            table[method] = asdict(figures)
            if reference:
                print(
                    f"{method:<6} {figures.peftlab:>18.1f} {figures.reference:>20.1f} "
                    f"{figures.peftlab / figures.reference:>6.2f} {figures.model_only:>21.1f} "
                    f"{figures.model_only / figures.reference:>6.2f}",
                    flush=True,
                )
        if reference:
            print(
                "ratio: peftlab / reference. bound: model-only / reference, the highest ratio a trainer doing "
                "the same arithmetic could reach (the reference's cost beyond the model passes is all it can "
                "remove)."
            )
        print_epoch_split(table)
        if args.json:
            # The unrounded figures, for scripts and tests that check the printed ratios.
            Path(args.json).write_text(json.dumps(table, indent=2), encoding="utf-8")


class RowTimeout(BaseException):
    """A benchmark row ran past its time box (a BaseException: no library's `except Exception` swallows it)."""


@contextlib.contextmanager
def time_box(seconds: float | None) -> Iterator[None]:
    """Raise RowTimeout in the block once it has run `seconds` of wall time (SIGALRM); no box for None or 0."""
    if not seconds:
        yield
        return

    def expire(signum: int, frame: object) -> None:
        raise RowTimeout

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def boxed(
    label: str,
    batch: int,
    seconds: float | None,
    work: Callable[[], Any],
    box: str = "time box (--row-seconds)",
    note: Callable[[], str] | None = None,
) -> Any:
    """`work()`'s result, or None after printing why the row was skipped when it ran past `seconds` (`box`
    names the limit, `note()` adds what the row got to before it)."""
    try:
        with time_box(seconds):
            return work()
    except RowTimeout:
        print(
            f"{label:<{LABEL}} {batch:>5} skipped: ran past its {seconds:g} s {box}; "
            + (f"{note()}; " if note else "")
            + "the next rows go on",
            flush=True,
        )
        return None


class Budget:
    """The GPU run's time: each row is boxed to the smaller of --row-seconds and the time left of
    --budget-seconds; a row with under MIN_ROW_SECONDS left is skipped with a line saying so, as is a row that
    runs out of GPU memory or (on a GPU, not in a dry run) fails, so that the rows after it still run."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.row_seconds = args.row_seconds
        self.total = args.budget_seconds
        self.deadline = STARTED + args.budget_seconds if args.budget_seconds else None
        self.tolerate_errors = not args.dry_run

    def left(self) -> float | None:
        return None if self.deadline is None else self.deadline - time.monotonic()

    def skip(self, label: str, batch: int, why: str) -> None:
        print(f"{label:<{LABEL}} {batch:>5} skipped: {why}", flush=True)

    def spent(self, label: str, batch: int) -> bool:
        """Whether the budget is spent; if so, the row's line says so."""
        left = self.left()
        if left is not None and left < MIN_ROW_SECONDS:
            self.skip(
                label,
                batch,
                f"{max(left, 0):.0f} s left of the run's {self.total:g} s budget (--budget-seconds, "
                "PEFTLAB_BENCH_SECONDS in gpu.sh)",
            )
            return True
        return False

    def run(
        self, label: str, batch: int, work: Callable[[], Any], note: Callable[[], str] | None = None
    ) -> Any:
        """`work()`'s result, or None after a line saying why the row was skipped."""
        if self.spent(label, batch):
            return None
        left = self.left()
        seconds, box = self.row_seconds, "time box (--row-seconds)"
        if left is not None and (not seconds or left < seconds):
            seconds, box = left, f"time box (what was left of the run's {self.total:g} s budget)"
        try:
            return boxed(label, batch, seconds, work, box, note)
        except torch.cuda.OutOfMemoryError as error:
            reset_peak_memory()
            self.skip(label, batch, f"out of GPU memory ({str(error).splitlines()[0][:120]})")
        except Exception as error:
            if not self.tolerate_errors:
                raise
            import traceback

            traceback.print_exc()
            self.skip(label, batch, f"{type(error).__name__}: {str(error).splitlines()[0][:160]}")
        return None


def extra(method: str) -> dict[str, str]:
    """The options only TI needs."""
    return TI if method == "ti" else {}


def table_row(
    args: argparse.Namespace,
    what: str,
    batch: int,
    speed: float,
    peak: float,
    tflop_per_sample: float,
    epochs: bool = True,
) -> None:
    """One line of the GPU table; `epochs`: with the projected seconds of 10 and 15 epochs of --images."""
    utilisation = speed * tflop_per_sample / args.peak_tflops * 100
    print(
        f"{what:<{LABEL}} {batch:>5} {speed:>10.2f} {peak:>9.1f} {utilisation:>6.1f} "
        + (f"{10 * args.images / speed:>9.1f} {15 * args.images / speed:>9.1f}" if epochs else ""),
        flush=True,
    )


def generation_table_rows(
    args: argparse.Namespace, budget: Budget, label: str, config: Any, images: int, tflop: float
) -> None:
    """peftlab's generation (`label`, batched) and the plain one-image pipeline loop (`label plain`) on
    `images` prompts, in the dtype the engine resolves on both sides (auto: float16 on CUDA), so that the rows
    differ only in what the engine does (batching, SDPA), not in precision."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from generate import peftlab_images_per_second, plain_images_per_second

    from generation.engine import PromptItem, resolve_device_dtype

    places = ("tower", "bridge", "temple", "castle")
    prompts = [
        PromptItem(key=i, text=f"a {places[i % 4]} in ghiblivis style, view {i}") for i in range(images)
    ]
    device, gen_dtype = resolve_device_dtype("auto", config.dtype)
    for what, batch, run in (
        (label, config.batch_size, lambda: peftlab_images_per_second(config, prompts)[0]),
        (f"{label} plain", 1, lambda: plain_images_per_second(config, prompts, device, gen_dtype)),
    ):
        reset_peak_memory()
        speed = budget.run(what, batch, run)
        if speed is not None:
            table_row(args, what, batch, speed, peak_memory_gib(), tflop, epochs=False)


def gpu_benchmark(args: argparse.Namespace) -> None:
    """The GPU table; with --dry-run the same code at tiny sizes, on whatever device there is."""
    from generation.engine import GenerationConfig

    if not args.dry_run and not torch.cuda.is_available():
        raise SystemExit("--gpu needs a CUDA device; none is visible (try --dry-run).")
    size, shape = (64, "tiny") if args.dry_run else (512, "sd15")
    if args.dry_run and not torch.cuda.is_available():
        # Inductor builds C++ for minutes on a CPU; a dry run checks the code path, so Dynamo traces the UNet
        # and hands its graphs to the eager backend.
        compile_module = torch.nn.Module.compile
        torch.nn.Module.compile = lambda module, *a, **k: compile_module(
            module, *a, **{**k, "backend": "eager"}
        )
    precision, reason = resolve_mixed_precision("auto")  # what a user gets without flags
    if args.dry_run and not torch.cuda.is_available():
        # The precision an H200 gets, so that a CPU dry run goes through the GPU run's dtype paths.
        precision, reason = "bf16", "dry run on a CPU: what auto picks on an H200"
    budget = Budget(args)
    parts = args.parts
    left_out = [part for part in PARTS if part not in parts]
    if left_out:
        print(f"not run (--parts {' '.join(parts)}): the {', '.join(left_out)} rows")
    with tempfile.TemporaryDirectory(prefix="peftlab-bench-") as folder:
        root = Path(folder)
        if "sd15" in parts or "compile" in parts:
            start = time.perf_counter()
            model = build_tiny_model(
                root / "model",
                TinyModelConfig(shape=shape, text_width=32 if args.dry_run else 768, image_size=size),
            ).path
            sd_vocabulary(model)
            dataset = make_dataset(root, args.images, size)
            print(
                f"{shape} random weights, {size}x{size}, mixed precision {precision} ({reason}), {args.images} "
                f"images, {args.epochs} epochs per training row (median of epochs 2-{args.epochs}); "
                f"setup {time.perf_counter() - start:.0f} s"
            )
        print(
            f"{'what':<{LABEL}} {'batch':>5} {'samples/s':>10} {'peak GiB':>9} {'MFU %':>6} {'10 ep. s':>9} {'15 ep. s':>9}"
        )
        row = functools.partial(table_row, args)
        train_tflop = TRAIN_FACTOR * UNET_FORWARD_TFLOP

        def training_rows(compiled: bool) -> None:
            for method in ("lora", "ti"):
                for batch in args.batch_sizes:
                    config = build_config(
                        method,
                        model=str(model),
                        resolution=size,
                        epochs=args.epochs,
                        batch_size=batch,
                        compile=compiled,
                        mixed_precision=precision,
                        cache_dir=str(root / "cache"),
                        **extra(method),
                    )
                    reference = batch == args.reference_batch and not compiled
                    label = f"{method}{' compile' if compiled else ''}"
                    figures = budget.run(
                        label,
                        batch,
                        functools.partial(
                            measure, dataset, root / f"{method}-{batch}-{compiled}", config, reference
                        ),
                    )
                    if figures is None:
                        continue
                    row(label, batch, figures.peftlab, figures.peak_gib, train_tflop)
                    if figures.reference is not None:
                        row(f"{method} reference", batch, figures.reference, figures.peak_gib, train_tflop)
                        row(f"{method} model-only", batch, figures.model_only, figures.peak_gib, train_tflop)

        generation_rows = functools.partial(generation_table_rows, args, budget)

        # Each image: `steps` UNet forwards of 2 samples (classifier-free guidance).
        gen_tflop = args.gen_steps * 2 * UNET_FORWARD_TFLOP
        if "sd15" in parts:
            training_rows(compiled=False)
            generation_rows(
                "generate",
                GenerationConfig(
                    model=str(model), steps=args.gen_steps, width=size, height=size, batch_size=args.gen_batch
                ),
                args.gen_images,
                gen_tflop,
            )
        if "sdxl" in parts:
            sdxl_rows(args, root, precision, budget)
        if "compile" in parts:
            training_rows(compiled=True)
        print(
            f"samples/s: images/s for generate. Peak GiB of a reference row: both loops' models together. MFU %: rate x {train_tflop:.1f} TFLOP per training sample or "
            f"{gen_tflop:.0f} TFLOP per image / {args.peak_tflops:.0f} TFLOP/s (SDXL: {TRAIN_FACTOR * SDXL_UNET_FORWARD_TFLOP:.1f} "
            f"and {args.gen_steps * 2 * SDXL_UNET_FORWARD_TFLOP:.0f}). 10/15 ep. s: projected "
            f"training seconds of 10 (LoRA) / 15 (TI) epochs of {args.images} images. gc: --gradient-checkpointing."
        )


def sdxl_rows(args: argparse.Namespace, root: Path, precision: str, budget: Budget) -> None:
    """SDXL at its native 1024 px on random weights of SDXL base 1.0's sizes (the dry run: the tiny SDXL model
    at 64 px): LoRA at batch 1 and 4 (dry run 1 and 2) without and with gradient checkpointing, whose peak
    memory is the figure a card's size is chosen by, and generation against the plain pipeline loop."""
    from generation.engine import GenerationConfig

    size = 64 if args.dry_run else 1024
    labels = [
        (f"sdxl lora{' gc' if checkpointing else ''}", batch, checkpointing)
        for batch in args.sdxl_batch_sizes
        for checkpointing in (False, True)
    ]
    every_row = [(label, batch) for label, batch, _ in labels] + [
        ("sdxl generate", args.sdxl_gen_batch),
        ("sdxl generate plain", 1),
    ]
    if budget.left() is not None and budget.left() < SDXL_SETUP_SECONDS:
        for label, batch in every_row:
            budget.skip(
                label,
                batch,
                f"{max(budget.left(), 0):.0f} s left of the run's {budget.total:g} s budget, under the "
                f"{SDXL_SETUP_SECONDS} s that building SDXL's weights and one row take",
            )
        return
    start = time.perf_counter()
    shape = "tiny" if args.dry_run else "sdxl"
    config = TinyModelConfig(
        shape=shape, family="sdxl", text_width=32 if args.dry_run else 768, image_size=size
    )
    try:
        model = build_sdxl_weights(root / "sdxl-model", config)
        (root / "sdxl").mkdir()
        dataset = make_dataset(root / "sdxl", args.sdxl_images, size)
    except Exception as error:
        if args.dry_run:
            raise
        import traceback

        traceback.print_exc()
        for label, batch in every_row:
            budget.skip(label, batch, f"building SDXL's weights or data failed: {type(error).__name__}: {error}")
        return
    print(
        f"sdxl: {'tiny SDXL' if args.dry_run else 'SDXL base 1.0'}-shaped random weights, {size}x{size}, "
        f"mixed precision {precision}, {args.sdxl_images} images, {args.epochs} epochs per LoRA row; "
        f"setup {time.perf_counter() - start:.0f} s",
        flush=True,
    )
    train_tflop = TRAIN_FACTOR * SDXL_UNET_FORWARD_TFLOP
    for label, batch, checkpointing in labels:
        lora = build_config(
            "lora",
            model=str(model),
            resolution=size,
            epochs=args.epochs,
            batch_size=batch,
            gradient_checkpointing=checkpointing,
            mixed_precision=precision,
            cache_dir=str(root / "sdxl-cache"),
        )
        figures = budget.run(
            label,
            batch,
            functools.partial(measure, dataset, root / f"sdxl-{batch}-{checkpointing}", lora, False),
            # Past its box the row still has its peak so far: the figure SDXL's rows are for.
            note=lambda: f"peak so far {peak_memory_gib():.1f} GiB",
        )
        if figures is not None:
            table_row(args, label, batch, figures.peftlab, figures.peak_gib, train_tflop, epochs=False)
    generation_table_rows(
        args,
        budget,
        "sdxl generate",
        GenerationConfig(
            model=str(model),
            steps=args.gen_steps,
            width=size,
            height=size,
            batch_size=args.sdxl_gen_batch,
        ),
        args.sdxl_gen_images,
        args.gen_steps * 2 * SDXL_UNET_FORWARD_TFLOP,
    )


def build_sdxl_weights(output: Path, config: TinyModelConfig) -> Path:
    """The SDXL rows' model folder. On a GPU the random initialisation of SDXL's 3.5 B parameters runs there
    (quicker than on the CPU) and the files are written from it; if that fails, it is built on the CPU."""
    if torch.cuda.is_available():
        try:
            with torch.device("cuda"):
                return build_tiny_model(output, config).path
        except Exception as error:  # noqa: BLE001 (the CPU build below is the fallback; the error is shown)
            print(f"sdxl: building on the GPU failed ({type(error).__name__}: {error}); building on the CPU")
        finally:
            reset_peak_memory()
    return build_tiny_model(output, config).path


def method_row(
    method: str, model: str, dataset: str, output: str, options: dict[str, Any]
) -> dict[str, float]:
    """One method trained through peftlab's loop in this (fresh) process: its speed and peak memory."""
    logging.disable(logging.WARNING)  # the run's own notes (captions cut) would break up the table
    config = build_config(method, model=model, **options, **extra(method))
    reset_peak_memory()
    result = train(Path(dataset), Path(output), config)
    after_first = result.epochs[2:] or result.epochs[1:]
    # Linux reports the peak resident set in KiB.
    peak = (
        peak_memory_gib()
        if torch.cuda.is_available()
        else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    )
    return {
        "samples_per_s": statistics.median(epoch.samples_per_s for epoch in after_first),
        "epoch_seconds": statistics.median(epoch.seconds for epoch in after_first),
        "peak_gib": peak,
    }


def methods_benchmark(args: argparse.Namespace) -> None:
    """Every method of --methods on the same model, data, batch and precision, each in a fresh process."""
    gpu = args.gpu or args.dry_run
    shape, size = ("sd15", 512) if args.gpu else ("tiny", 64)
    precision = "auto" if gpu else "no"
    batch = 4 if args.gpu else 2
    with tempfile.TemporaryDirectory(prefix="peftlab-bench-") as folder:
        root = Path(folder)
        model = build_tiny_model(
            root / "model", TinyModelConfig(text_width=768, shape=shape, image_size=size)
        ).path
        dataset = make_dataset(root, args.images, size)
        options = {
            "resolution": size,
            "epochs": args.epochs,
            "batch_size": batch,
            "mixed_precision": precision,
            "cache_dir": str(root / "cache"),
        }
        print(
            f"{'GPU' if torch.cuda.is_available() else 'CPU'}, {shape} model with random weights, {size}x{size}, "
            f"{args.images} images, batch size {batch}, mixed precision {precision}, {args.epochs} epochs per method "
            f"(median of epochs 2-{args.epochs}), each method in a fresh process; every method at its defaults"
        )
        print(f"{'method':<6} {'samples/s':>10} {'epoch s':>8} {'peak memory GiB':>16}")
        rows = {}
        context = multiprocessing.get_context("spawn")  # a fresh process: its peak memory is the method's own
        for method in args.methods:
            with concurrent.futures.ProcessPoolExecutor(max_workers=1, mp_context=context) as pool:
                row = pool.submit(
                    method_row, method, str(model), str(dataset), str(root / method), options
                ).result()
            rows[method] = row
            print(
                f"{method:<6} {row['samples_per_s']:>10.2f} {row['epoch_seconds']:>8.2f} {row['peak_gib']:>16.2f}",
                flush=True,
            )
        print(
            "peak memory: CUDA peak allocated on a GPU; on a CPU the process's peak resident set (model, data, "
            "proof pipeline and Python included)."
        )
        if args.json:
            Path(args.json).write_text(json.dumps(rows, indent=2), encoding="utf-8")


def reset_peak_memory() -> None:
    """Free the previous run's models, so that the next peak is the next run's own."""
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def peak_memory_gib() -> float:
    """Peak GPU memory since the last reset (0 on a CPU)."""
    return torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available() else 0.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gpu", action="store_true", help="Run the SD-1.5-shaped GPU table instead.")
    parser.add_argument("--dry-run", action="store_true", help="The GPU table's code with tiny sizes.")
    parser.add_argument("--images", type=int, help="Images in the dataset (CPU 22, GPU 115, dry run 4).")
    parser.add_argument("--epochs", type=int, help="Epochs per run, the first is warm-up (CPU 6, else 2).")
    parser.add_argument("--batch-sizes", type=int, nargs="+", help="GPU batch sizes (1 4 8; dry run 1 2).")
    parser.add_argument("--reference-batch", type=int, help="GPU batch of the reference loop (4; dry run 2).")
    parser.add_argument(
        "--tiny-vocabulary",
        dest="sd_vocabulary",
        action="store_false",
        help="CPU: keep the tiny model's 821-token table instead of SD's 49,408.",
    )
    parser.add_argument(
        "--row-seconds",
        type=float,
        help="GPU: the time box of each row; a row past it is skipped with a line saying so (GPU 120, dry run none).",
    )
    parser.add_argument(
        "--shape",
        choices=("tiny", "sd15", "sdxl-tiny"),
        default="tiny",
        help="CPU: the model's layer sizes; sd15 (SD-1.5's, random weights) and sdxl-tiny (the tiny SDXL-shaped "
        "model) measure peftlab's epochs only.",
    )
    parser.add_argument(
        "--inline-saves", action="store_true", help="CPU: save in line instead of on a background thread."
    )
    parser.add_argument("--json", help="CPU: also write the unrounded figures per method to this JSON file.")
    parser.add_argument(
        "--methods",
        nargs="+",
        choices=("lora", "dora", "loha", "lokr", "oft", "ti"),
        help="Instead of the reference comparison: these methods' samples/s and peak memory on the same data.",
    )
    parser.add_argument(
        "--budget-seconds",
        type=float,
        help="GPU: the whole table's time; a row is boxed to what is left of it and skipped, with a line, when "
        f"under {MIN_ROW_SECONDS} s is left (gpu.sh: PEFTLAB_BENCH_SECONDS less 20; default none).",
    )
    parser.add_argument(
        "--parts",
        nargs="+",
        choices=PARTS,
        default=list(PARTS),
        help="GPU: the parts of the table to run, always in this order (default all): sd15 (SD-1.5 training "
        "and generation without --compile), sdxl, compile (SD-1.5 training with --compile).",
    )
    parser.add_argument("--sdxl-images", type=int, help="Images of the SDXL rows' dataset (GPU 16, dry run 4).")
    parser.add_argument(
        "--sdxl-batch-sizes", type=int, nargs="+", help="SDXL LoRA batch sizes (1 4; dry run 1 2)."
    )
    parser.add_argument("--sdxl-gen-images", type=int, help="SDXL images per generation side (8; dry run 4).")
    parser.add_argument("--sdxl-gen-batch", type=int, help="peftlab's SDXL generation batch (4; dry run 2).")
    parser.add_argument("--gen-images", type=int, default=16, help="Images per generation side.")
    parser.add_argument("--gen-steps", type=int, default=30, help="Generation steps (dry run 2).")
    parser.add_argument("--gen-batch", type=int, default=8, help="peftlab's generation batch.")
    parser.add_argument(
        "--peak-tflops",
        type=float,
        default=989.0,
        help="The GPU's dense bf16 peak in TFLOP/s (H100/H200 SXM: 989).",
    )
    args = parser.parse_args()
    gpu = args.gpu or args.dry_run
    args.images = args.images or (4 if args.dry_run else 115 if gpu else 22)
    args.epochs = args.epochs or (2 if gpu else 6)
    args.batch_sizes = args.batch_sizes or ([1, 2] if args.dry_run else [1, 4, 8])
    args.reference_batch = args.reference_batch or (2 if args.dry_run else 4)
    if args.row_seconds is None and not args.dry_run:
        args.row_seconds = 120.0
    if args.dry_run:
        args.gen_images, args.gen_steps, args.gen_batch = 4, 2, 2
    args.sdxl_images = args.sdxl_images or (4 if args.dry_run else 16)
    args.sdxl_batch_sizes = args.sdxl_batch_sizes or ([1, 2] if args.dry_run else [1, 4])
    args.sdxl_gen_images = args.sdxl_gen_images or (4 if args.dry_run else 8)
    args.sdxl_gen_batch = args.sdxl_gen_batch or (2 if args.dry_run else 4)
    logging.disable(logging.INFO)  # the per-epoch log lines; the tables are the output
    if args.methods:
        methods_benchmark(args)
    elif gpu:
        gpu_benchmark(args)
    else:
        cpu_benchmark(args)


if __name__ == "__main__":
    main()
