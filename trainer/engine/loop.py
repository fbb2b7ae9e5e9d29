"""THE training loop, shared by every method (trainer/engine/methods/) so that comparisons between them are fair.

Latents (and, where the text encoder is frozen, its outputs) are computed once and cached; each epoch trains on
a seeded shuffle, measures a deterministic validation loss, keeps the best and the last weights, and
checkpoints atomically so `resume=True` continues a killed run to the same result.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import hashlib
import json
import logging
import math
import os
import random
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from peftlab.errors import UserInputError, error_line
from peftlab.files import swap_folder, write_atomic
from peftlab.progress import Progress, ProgressCallback, ignore_progress
from trainer.engine.config import TrainingConfig
from trainer.engine.data import (
    DiskCache,
    cached_latent_moments,
    cached_text_states,
    caption_capacity,
    caption_token_counts,
    caption_tokens_fitting,
    check_model_exists,
    image_sizes,
    load_components,
    load_pixels,
    read_dataset,
)
from trainer.engine.distributed import make_accelerator
from trainer.engine.export import write_loss_plot, write_metrics_csv, write_run_json
from trainer.engine.methods import Method, make_method
from trainer.engine.results import EpochResult
from trainer.engine.saving import BackgroundSaves, TrainedSnapshot

logger = logging.getLogger(__name__)
CHECKPOINT = "checkpoint.pt"
VALIDATION_BATCH_FACTOR = 4  # validation batch = this x --batch-size (inference needs far less memory)
PROGRESS_EVERY = 10  # steps between progress reports; each report reads the loss, a host synchronisation
# Options that do not change the trained weights, so a resume may change them.
# --compile changes how the UNet runs, not what it computes; background saves write the same files.
RESUMABLE_CHANGES = frozenset({"background_saves", "cache", "cache_dir", "checkpoint_every", "compile"})


@dataclass
class TrainingResult:
    """What a finished run wrote and measured."""

    output: Path
    method: str
    epochs: list[EpochResult]
    best_epoch: int
    best_val_loss: float
    stopped_early: bool
    resumed_from_epoch: int
    seconds: dict[str, float]  # per phase: load, cache, train, validate, save
    files: dict[str, str] = field(default_factory=dict)  # label -> path


def check_inputs(dataset: Path, output: Path, config: TrainingConfig, resume: bool) -> str:
    """Fail early on bad input (no model loaded); return the dataset manifest's SHA-256."""
    dataset, output = Path(dataset), Path(output)
    read_dataset(dataset, "train.txt")
    read_dataset(dataset, "validation.txt")
    manifest = dataset / "manifest.json"
    if not manifest.is_file():
        raise UserInputError(f"{manifest} is missing; prepare the dataset with `manage.py prepare_dataset`.")
    if output.exists() and not output.is_dir():
        raise UserInputError(f"output {output} is a file; give a folder path.")
    check_writable(output)
    check_model_exists(config.model)
    has_checkpoint = (output / CHECKPOINT).is_file()
    if resume and not has_checkpoint:
        raise UserInputError(
            f"nothing to resume: {output / CHECKPOINT} does not exist; run without --resume."
        )
    if not resume and has_checkpoint:
        raise UserInputError(
            f"{output} already holds a run; pass --resume to continue it or choose a new --output."
        )
    return hashlib.sha256(manifest.read_bytes()).hexdigest()


def check_writable(output: Path) -> None:
    """Refuse an output folder that cannot be written, without creating it (a failed start leaves nothing)."""
    existing = output
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise UserInputError(
            f"cannot write to the output folder {output} ({existing} is a file); choose another."
        )
    if existing != output:
        # The folder is made by the first save; its parent must let us make it.
        if not os.access(existing, os.W_OK | os.X_OK):
            raise UserInputError(
                f"cannot write to the output folder {output} ({existing} is not writable); choose another."
            )
        return
    try:
        # A name per process: the processes of one launch check the same folder at the same moment.
        probe = output / f".write-test-{os.getpid()}"
        with open(probe, "w", encoding="utf-8"):
            pass
        os.remove(probe)
    except OSError as error:
        raise UserInputError(
            f"cannot write to the output folder {output} ({error.strerror}); choose another."
        ) from None


def train(
    dataset: Path,
    output: Path,
    config: TrainingConfig,
    *,
    resume: bool = False,
    progress: ProgressCallback = ignore_progress,
    on_epoch: Callable[[EpochResult], None] | None = None,
    on_warning: Callable[[str], None] | None = None,
) -> TrainingResult:
    """Train `config.method` on a prepared dataset into `output`; see the module docstring.

    on_warning receives each thing the researcher should know about the run (captions cut, images upscaled,
    images skipped when the dataset was prepared), as one sentence, from the main process.
    """
    return Trainer(Path(dataset), Path(output), config, resume, progress, on_epoch, on_warning).run()


def validation_pairs(images: int, timesteps: int, train_timesteps: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The validation loss's (image index, timestep) pairs: `timesteps` evenly spaced over the scheduler's."""
    # Pair k scores image k mod N at timestep k mod T: max(N, T) pairs, every image and every timestep at
    # least once, none more than once beyond the others. Crossing them (N x T forwards) cost about as much
    # as the training steps; for a fixed number of forwards, spreading them over distinct images and
    # timesteps estimates the mean loss with less variance than scoring the same images again.
    spaced = torch.linspace(0, train_timesteps - 1, timesteps).round().long()
    pairs = torch.arange(max(images, timesteps))
    return pairs % images, spaced[pairs % timesteps]


class Trainer:
    """One run's state; `run()` is the loop."""

    def __init__(
        self,
        dataset: Path,
        output: Path,
        config: TrainingConfig,
        resume: bool,
        progress: ProgressCallback,
        on_epoch: Callable[[EpochResult], None] | None,
        on_warning: Callable[[str], None] | None = None,
    ) -> None:
        self.dataset, self.output, self.config, self.resume = dataset, output, config, resume
        self.progress, self.on_epoch = progress, on_epoch or (lambda _: None)
        self.on_warning = on_warning or (lambda _: None)
        self.warnings: list[str] = []  # what warn() said, for run.json
        self.manifest_sha256 = check_inputs(dataset, output, config, resume)
        self.output_existed = output.exists()
        self.method: Method = make_method(config)
        self.seconds = {phase: 0.0 for phase in ("load", "cache", "train", "validate", "save")}
        self.history: list[EpochResult] = []
        self.best_epoch = 0
        self.best_val_loss = math.inf
        self.start_epoch = 0
        self.resumed_from = 0
        self.stopped_early = False
        self.saves = BackgroundSaves()  # the main process's save in flight, if any
        self.snapshot: TrainedSnapshot | None = None  # what background saves save from, made at their first
        # Filled by prepare_data; None where the setting (cache, method) does without them.
        self.train_mean: torch.Tensor | None = None  # latent means and standard deviations, pre-scaled
        self.train_std: torch.Tensor | None = None
        self.train_pixels: torch.Tensor | None = None
        self.train_states: torch.Tensor | None = None
        self.val_states: torch.Tensor | None = None
        # The family's pooled text embeddings and per-image size-and-crop conditions; None where it has none.
        self.train_pooled: torch.Tensor | None = None
        self.val_pooled: torch.Tensor | None = None
        self.train_conditions: torch.Tensor | None = None
        self.val_conditions: torch.Tensor | None = None

    @contextlib.contextmanager
    def phase(self, name: str):
        """Add the wall time of the block to `self.seconds[name]`."""
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] += time.perf_counter() - start

    def run(self) -> TrainingResult:
        """Train, or on failure leave no output folder this run made and wrote nothing into."""
        try:
            return self.train_all()
        except BaseException:
            self.settle_saves()
            if not self.output_existed and self.output.is_dir():
                if not any(path.is_file() for path in self.output.rglob("*")):
                    shutil.rmtree(self.output, ignore_errors=True)
            raise

    def settle_saves(self) -> None:
        """Let the save in flight end before the run stops on an error (the error it keeps)."""
        try:
            self.saves.wait()
        except BaseException as error:  # the run's own error is the one raised
            logger.warning("the background save failed as well: %s", error_line(error))

    def train_all(self) -> TrainingResult:
        """The loop: load, cache, train epochs, validate, save, finish."""
        from accelerate.utils import set_seed
        from diffusers.optimization import get_scheduler

        config = self.config
        self.mixed_precision, reason = resolve_mixed_precision(config.mixed_precision)
        self.accelerator = accelerator = make_accelerator(self.mixed_precision)
        if accelerator.is_main_process:
            logger.info("mixed precision: %s (%s)", self.mixed_precision, reason)
        device = accelerator.device
        allow_tf32(device)
        set_seed(config.seed)
        weight_dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(
            accelerator.mixed_precision, torch.float32
        )

        self.check_dataset()
        with self.phase("load"):
            # Frozen weights load in the mixed-precision dtype; what trains stays float32.
            text_dtype = torch.float32 if self.method.text_encoder_trains else weight_dtype
            self.components = parts = load_components(config.model, weight_dtype, text_dtype, config.vae)
            for module in (parts.vae, parts.unet, *parts.text_encoders):
                module.requires_grad_(False)
                module.to(device)
            parts.vae.eval()
            use_channels_last(parts.unet, device)
            self.method.setup(parts)
            if config.gradient_checkpointing:
                parts.unet.enable_gradient_checkpointing()
                if self.method.text_encoder_trains:
                    for encoder in parts.text_encoders:
                        encoder.activation_checkpointing_enable()
            if config.compile:
                # In place (Module.compile), so state-dict keys, PEFT and saving see the same module.
                parts.unet.compile()

        with self.phase("cache"):
            self.prepare_data(device, weight_dtype)

        module = self.method.trained_module(parts)
        module.train()
        self.trainable = [p for p in module.parameters() if p.requires_grad]
        optimizer = make_optimizer(self.trainable, config, device)

        processes = accelerator.num_processes
        global_batch = config.batch_size * processes
        batches_per_epoch = math.ceil(len(self.train_split.images) / global_batch)
        steps_per_epoch = math.ceil(batches_per_epoch / config.gradient_accumulation)
        # Accelerate steps a prepared scheduler once per process, hence the factor.
        scheduler = get_scheduler(
            config.lr_scheduler,
            optimizer=optimizer,
            num_warmup_steps=config.warmup_steps * processes,
            num_training_steps=config.epochs * steps_per_epoch * processes,
        )
        self.module, self.optimizer, self.scheduler = accelerator.prepare(module, optimizer, scheduler)
        if self.resume:
            self.load_checkpoint()
        else:
            # Epoch 0: the validation loss before the first step, the baseline every epoch must beat.
            with self.phase("validate"):
                start = time.perf_counter()
                loss = self.validation_loss()
                seconds = time.perf_counter() - start
                self.history.append(EpochResult(0, None, loss, seconds, 0.0, validation_seconds=seconds))

        for epoch in range(self.start_epoch, config.epochs):
            start = time.perf_counter()
            result = self.train_epoch(epoch)
            self.history.append(result)
            improved = result.val_loss < self.best_val_loss
            if improved:
                self.best_epoch, self.best_val_loss = result.epoch, result.val_loss
            patience = config.early_stopping_patience
            stopping = (
                bool(patience) and result.epoch - self.best_epoch >= patience and result.epoch < config.epochs
            )
            with self.phase("save"):
                saving = time.perf_counter()
                if accelerator.is_main_process:
                    # The previous epoch's save ends first (raising its error): this one replaces its files.
                    self.saves.wait()
                    checkpoint = (epoch + 1) % config.checkpoint_every == 0 or epoch + 1 == config.epochs
                    if checkpoint:
                        # The checkpoint's own copy of this entry lacks the save's time.
                        self.history[-1] = self.timed(result, start, saving)
                    # The run's last save is made in line: no epoch is left to train meanwhile.
                    background = config.background_saves and epoch + 1 < config.epochs and not stopping
                    save = self.epoch_save(improved, epoch + 1 if checkpoint else None, background)
                    if background:
                        self.saves.submit(save)
                    else:
                        save()
                accelerator.wait_for_everyone()
            self.history[-1] = result = self.timed(result, start, saving)
            self.on_epoch(result)
            line = (
                f"epoch {result.epoch}/{config.epochs}: train loss {result.train_loss:.5f}, "
                f"validation loss {result.val_loss:.5f}{' (best)' if improved else ''}, "
                f"{result.seconds:.1f} s, {result.samples_per_s:.2f} samples/s"
            )
            self.progress(
                Progress(
                    "epoch",
                    result.epoch,
                    config.epochs,
                    message=line,
                    metrics={"train_loss": result.train_loss, "val_loss": result.val_loss},
                    overall=result.epoch / config.epochs,
                )
            )
            if accelerator.is_main_process:
                logger.info(line)
            if stopping:
                self.stopped_early = True
                break
        with self.phase("save"):
            self.saves.wait()
            if accelerator.is_main_process and self.stopped_early:
                # Record the stop, so that resuming a stopped run finishes without training more.
                self.save_checkpoint(self.history[-1].epoch)
        return self.finish()

    @staticmethod
    def timed(result: EpochResult, start: float, saving: float) -> EpochResult:
        """`result` with the epoch's wall time so far (from `start`) and its saving time (from `saving`)."""
        now = time.perf_counter()
        return dataclasses.replace(result, seconds=now - start, save_seconds=now - saving)

    def prepare_data(self, device: torch.device, weight_dtype: torch.dtype) -> None:
        """Latent moments and (for a frozen text encoder) text states once; token ids; fixed validation noise."""
        config, parts = self.config, self.components
        cache = DiskCache(Path(config.cache_dir or self.dataset / ".cache") if config.cache else None)
        self.train_split = read_dataset(self.dataset, "train.txt")
        self.val_split = read_dataset(self.dataset, "validation.txt")
        scale = parts.vae.config.scaling_factor
        if config.cache:
            self.train_mean, self.train_std = scaled_moments(
                cached_latent_moments(
                    cache, parts, self.dataset, self.train_split, config.resolution, device, parts.vae.dtype
                ).to(device),
                scale,
            )
        else:
            self.train_pixels = load_pixels(self.dataset, self.train_split.images, config.resolution)
        # Validation needs fixed latents whatever the cache setting: compute them once (in memory if not cached).
        self.val_latents, _ = scaled_moments(
            cached_latent_moments(
                cache, parts, self.dataset, self.val_split, config.resolution, device, parts.vae.dtype
            ).to(device),
            scale,
        )
        captions = {
            name: [self.method.caption(caption) for caption in split.captions]
            for name, split in (("train", self.train_split), ("val", self.val_split))
        }
        self.count_truncated(captions["train"] + captions["val"])
        tokens = config.max_caption_tokens
        self.val_ids = parts.family.tokenize(parts.tokenizers, captions["val"], tokens).to(device)
        self.train_ids = parts.family.tokenize(parts.tokenizers, captions["train"], tokens).to(device)
        if not self.method.text_encoder_trains:
            self.val_states, self.val_pooled = self.to_device(
                cached_text_states(cache, parts, captions["val"], device, tokens), weight_dtype
            )
            if config.cache:
                self.train_states, self.train_pooled = self.to_device(
                    cached_text_states(cache, parts, captions["train"], device, tokens), weight_dtype
                )
        for name, split in (("train", self.train_split), ("val", self.val_split)):
            conditions = parts.family.image_conditions(
                image_sizes(self.dataset, split, config.resolution), config.resolution
            )
            setattr(self, f"{name}_conditions", None if conditions is None else conditions.to(device))
        # Fixed pairs and noise from a seeded generator: the same validation batch every epoch.
        self.val_images, self.val_timesteps = validation_pairs(
            len(self.val_split.images),
            config.validation_timesteps,
            parts.noise_scheduler.config.num_train_timesteps,
        )
        generator = torch.Generator().manual_seed(config.seed)
        noise_shape = (len(self.val_images), *self.val_latents.shape[1:])
        self.val_noise = torch.randn(noise_shape, generator=generator).to(device)

    def to_device(
        self, encoded: tuple[torch.Tensor, torch.Tensor | None], dtype: torch.dtype
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Text states and pooled embeddings (if any) on the training device in `dtype`."""
        device = self.accelerator.device
        return tuple(None if value is None else value.to(device, dtype) for value in encoded)

    def autocast(self) -> contextlib.AbstractContextManager:
        """Accelerate's autocast in mixed precision; nothing to enter in float32."""
        return contextlib.nullcontext() if self.mixed_precision == "no" else self.accelerator.autocast()

    def warn(self, message: str) -> None:
        """Tell the log and `on_warning` something the researcher should know about the run (main process)."""
        if self.accelerator.is_main_process:
            logger.warning("%s", message)
            self.warnings.append(message)
            self.on_warning(message)

    def check_dataset(self) -> None:
        """Warn when training upscales the prepared images, or when preparing the dataset skipped images."""
        manifest = json.loads((self.dataset / "manifest.json").read_text(encoding="utf-8"))
        prepared = manifest.get("settings", {}).get("resolution")
        if prepared and self.config.resolution > prepared:
            self.warn(
                f"training at {self.config.resolution} px on a dataset prepared at {prepared} px: every image is "
                f"upscaled {self.config.resolution / prepared:g}x, which adds no detail and makes each step "
                f"slower; train at --resolution {prepared}, or prepare the dataset at {self.config.resolution} px."
            )
        skipped = manifest.get("skipped", [])
        if skipped:
            named = "; ".join(f"{skip['file']} ({skip['reason']})" for skip in skipped[:3])
            more = f" and {len(skipped) - 3} more" if len(skipped) > 3 else ""
            self.warn(
                f"{len(skipped)} source image{'s were' if len(skipped) > 1 else ' was'} skipped when the dataset "
                f"was prepared: {named}{more}; see its manifest.json."
            )

    def count_truncated(self, captions: list[str]) -> None:
        """Count (and say) how many training captions are longer than --max-caption-tokens lets through."""
        tokenizer = self.components.tokenizer
        capacity = caption_capacity(tokenizer, self.config.max_caption_tokens)
        self.captions_truncated = sum(count > capacity for count in caption_token_counts(tokenizer, captions))
        self.captions_total = len(captions)
        if self.captions_truncated:
            longest, fitting = caption_tokens_fitting(tokenizer, captions)
            advice = (
                f"train with --max-caption-tokens {fitting} to keep them whole"
                if caption_capacity(tokenizer, fitting) >= longest
                else f"the longest has {longest} tokens, more than any setting lets through: shorten it"
            )
            self.warn(
                f"{self.captions_truncated} of {len(captions)} captions are longer than {capacity} tokens and lose "
                f"their tail (--max-caption-tokens {self.config.max_caption_tokens}); {advice}."
            )

    def global_shape(self, local: torch.Tensor) -> tuple[int, ...]:
        """The shape of `local` (this process's batch) for the global batch of every process."""
        return (len(local) * self.accelerator.num_processes, *local.shape[1:])

    def share(self, drawn: torch.Tensor) -> torch.Tensor:
        """This process's rows of a random draw made for the global batch.

        Every process draws for all of them and keeps its own rows: the generators stay in step (one saved
        RNG state resumes every process) and N processes x batch b draw what 1 process x batch N*b draws.
        """
        size = len(drawn) // self.accelerator.num_processes
        rank = self.accelerator.process_index
        return drawn[rank * size : (rank + 1) * size]

    def encoder_states(
        self, ids: torch.Tensor, cached: tuple[torch.Tensor, torch.Tensor | None] | None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Text-encoder outputs (states, pooled or None): cached for frozen encoders, computed (with gradients
        for TI) otherwise."""
        if cached is not None:
            return cached
        if self.method.text_encoder_trains:
            return self.module(ids)
        with torch.no_grad():
            return self.components.text_model(ids)

    def unet_kwargs(self, pooled: torch.Tensor | None, conditions: torch.Tensor | None) -> dict:
        """The family's extra UNet conditioning of a batch: its pooled text embeddings and image conditions."""
        dtype = self.components.unet.dtype
        return self.components.family.unet_kwargs(
            None if pooled is None else pooled.to(dtype), None if conditions is None else conditions.to(dtype)
        )

    def loss(
        self,
        latents: torch.Tensor,
        states: torch.Tensor,
        noise: torch.Tensor,
        timesteps: torch.Tensor,
        unet_kwargs: dict | None = None,
    ) -> torch.Tensor:
        """Per-sample noise-prediction MSE at `timesteps`, Min-SNR weighted when configured."""
        scheduler = self.components.noise_scheduler
        # Forward diffusion: x_t = sqrt(alpha_bar_t) x_0 + sqrt(1 - alpha_bar_t) noise.
        noisy = scheduler.add_noise(latents, noise, timesteps)
        unet = self.module if not self.method.text_encoder_trains else self.components.unet
        prediction = unet(noisy, timesteps, states, **(unet_kwargs or {})).sample
        target = (
            noise
            if scheduler.config.prediction_type == "epsilon"
            else scheduler.get_velocity(latents, noise, timesteps)
        )
        losses = F.mse_loss(prediction.float(), target.float(), reduction="none").mean(dim=(1, 2, 3))
        if self.config.snr_gamma:
            from diffusers.training_utils import compute_snr

            # Min-SNR: down-weight easy low-noise timesteps, w = min(SNR, gamma) / SNR (epsilon) or / (SNR+1) (v).
            snr = compute_snr(scheduler, timesteps)
            weights = torch.clamp(snr, max=self.config.snr_gamma)
            weights = weights / (snr if scheduler.config.prediction_type == "epsilon" else snr + 1)
            losses = losses * weights
        return losses

    def batch_indices(self, epoch: int) -> list[torch.Tensor]:
        """This process's index batches for `epoch`: a shuffle seeded by (seed, epoch), padded to whole batches."""
        count = len(self.train_split.images)
        order = torch.randperm(
            count, generator=torch.Generator().manual_seed(self.config.seed * 100_003 + epoch)
        )
        processes, rank = self.accelerator.num_processes, self.accelerator.process_index
        size = self.config.batch_size
        padded = torch.cat([order, order.repeat(processes * size)[: (-count) % (processes * size)]])
        batches = padded.view(-1, processes, size)
        return [batch[rank] for batch in batches]

    def train_epoch(self, epoch: int) -> EpochResult:
        """One pass over train.txt, then the validation loss."""
        config, accelerator, parts = self.config, self.accelerator, self.components
        device = accelerator.device
        batches = self.batch_indices(epoch)
        # One copy of the epoch's indices to the device: a copy per step would wait for the queued GPU work.
        device_batches = torch.stack(batches).to(device)
        loss_sum = torch.zeros((), device=device)
        scale = parts.vae.config.scaling_factor
        single = accelerator.num_processes == 1  # nothing to keep from syncing
        start = time.perf_counter()
        with self.phase("train"):
            for step, (indices, indices_device) in enumerate(zip(batches, device_batches, strict=True)):
                if config.cache:
                    mean, std = self.train_mean[indices_device], self.train_std[indices_device]
                else:
                    with torch.no_grad():
                        pixels = self.train_pixels[indices].to(device, dtype=parts.vae.dtype)
                        mean, std = scaled_moments(parts.vae.encode(pixels).latent_dist.parameters, scale)
                # Drawn for the global batch and shared out, so N processes draw what one process would.
                latents = posterior_sample(
                    mean,
                    std,
                    self.share(torch.randn(self.global_shape(mean), device=device, dtype=mean.dtype)),
                )
                cached = (
                    None
                    if self.train_states is None
                    else (self.train_states[indices_device], rows_of(self.train_pooled, indices_device))
                )
                sync = (step + 1) % config.gradient_accumulation == 0 or step + 1 == len(batches)
                with (
                    contextlib.nullcontext() if sync or single else accelerator.no_sync(self.module),
                    self.autocast(),
                ):
                    states, pooled = self.encoder_states(self.train_ids[indices_device], cached)
                    noise = self.share(
                        torch.randn(self.global_shape(latents), device=device, dtype=latents.dtype)
                    )
                    timesteps = self.share(
                        torch.randint(
                            0,
                            parts.noise_scheduler.config.num_train_timesteps,
                            self.global_shape(latents)[:1],
                            device=device,
                        )
                    )
                    losses = self.loss(
                        latents,
                        states.to(parts.unet.dtype),
                        noise,
                        timesteps,
                        self.unet_kwargs(pooled, rows_of(self.train_conditions, indices_device)),
                    )
                    loss = losses.mean()
                    accelerator.backward(loss / config.gradient_accumulation)
                loss_sum += losses.detach().sum()
                if sync:
                    if config.max_grad_norm:
                        accelerator.clip_grad_norm_(self.trainable, config.max_grad_norm)
                    self.optimizer.step()
                    self.scheduler.step()
                    self.optimizer.zero_grad(set_to_none=True)
                if (step + 1) % PROGRESS_EVERY == 0 or step + 1 == len(batches):
                    done = (step + 1) * config.batch_size * accelerator.num_processes
                    elapsed = time.perf_counter() - start
                    self.progress(
                        Progress(
                            f"epoch {epoch + 1}/{config.epochs}",
                            step + 1,
                            len(batches),
                            metrics={
                                "loss": loss_sum.item() / ((step + 1) * config.batch_size),
                                "samples/s": done / max(elapsed, 1e-9),
                            },
                            overall=(epoch + (step + 1) / len(batches)) / config.epochs,
                        )
                    )
            samples = len(batches) * config.batch_size
            train_loss = accelerator.gather(loss_sum.reshape(1)).sum().item() / (
                samples * accelerator.num_processes
            )
        train_seconds = time.perf_counter() - start
        if not math.isfinite(train_loss):
            raise UserInputError(
                f"the training loss became {train_loss} in epoch {epoch + 1}; lower --learning-rate "
                "or use --mixed-precision bf16 instead of fp16."
            )
        with self.phase("validate"):
            validating = time.perf_counter()
            val_loss = self.validation_loss()
        now = time.perf_counter()
        return EpochResult(
            epoch=epoch + 1,
            train_loss=train_loss,
            val_loss=val_loss,
            seconds=now - start,
            samples_per_s=samples * accelerator.num_processes / max(train_seconds, 1e-9),
            train_seconds=train_seconds,
            validation_seconds=now - validating,
        )

    @torch.no_grad()
    def validation_loss(self) -> float:
        """Mean noise-prediction MSE over the fixed (image, timestep, noise) validation pairs (deterministic)."""
        self.module.eval()
        device = self.accelerator.device
        images, timesteps = self.val_images.to(device), self.val_timesteps.to(device)
        total = torch.zeros((), device=device)
        size = self.config.batch_size * VALIDATION_BATCH_FACTOR
        # A trained text encoder (TI) changes every epoch: encode each caption once here, not once per pair.
        val_states, val_pooled = self.val_states, self.val_pooled
        if val_states is None:
            encoded = [self.encoder_states(ids, None) for ids in self.val_ids.split(size)]
            val_states = torch.cat([states for states, _ in encoded])
            val_pooled = None if encoded[0][1] is None else torch.cat([pooled for _, pooled in encoded])
        for start in range(0, len(images), size):
            image, pair = images[start : start + size], slice(start, start + size)
            with self.autocast():
                losses = self.loss(
                    self.val_latents[image],
                    val_states[image].to(self.components.unet.dtype),
                    self.val_noise[pair],
                    timesteps[pair],
                    self.unet_kwargs(rows_of(val_pooled, image), rows_of(self.val_conditions, image)),
                )
            total += losses.sum()
        self.module.train()
        value = total.item() / len(images)
        if not math.isfinite(value):
            raise UserInputError(
                f"the validation loss became {value}; lower --learning-rate or use --mixed-precision bf16."
            )
        return value

    def epoch_save(self, improved: bool, epochs_done: int | None, background: bool) -> Callable[[], None]:
        """This epoch's save: best/ if `improved`, last/, then the checkpoint of `epochs_done` if given. In the
        `background`, what it writes is copied now, so the next steps may change the module and optimizer."""
        module = self.accelerator.unwrap_model(self.module)
        if background:
            if self.snapshot is None:
                self.snapshot = TrainedSnapshot(module)
            module = self.snapshot.take()
        checkpoint = None if epochs_done is None else self.checkpoint_state(epochs_done)

        def save() -> None:
            if improved:
                self.save_weights(self.output / "best", module)
                # The same weights: last/ gets copies of best/'s proven files, not a second proof.
                self.save_weights(self.output / "last", self.output / "best")
            else:
                self.save_weights(self.output / "last", module)
            if checkpoint is not None:
                # Only now: a resume never starts from weights whose files are not proven and in place.
                self.write_checkpoint(checkpoint)

        return save

    def save_weights(self, folder: Path, source: torch.nn.Module | Path) -> None:
        """Write the method's artifacts of the trained module `source` to `folder` atomically (a staging folder
        renamed into place), or copy them from the folder `source`, just written and proven from the same
        weights."""
        staging = folder.with_name(f".{folder.name}-staging")
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        try:
            if isinstance(source, Path):
                for path in sorted(source.iterdir()):
                    shutil.copyfile(path, staging / path.name)
            else:
                self.method.save(source, staging)
        except BaseException:
            # A failed proof leaves the previous weights in place and no half-written staging folder.
            shutil.rmtree(staging, ignore_errors=True)
            raise
        swap_folder(staging, folder)

    def save_checkpoint(self, epochs_done: int) -> None:
        """Everything a resume needs, written now."""
        self.write_checkpoint(self.checkpoint_state(epochs_done))

    def write_checkpoint(self, state: dict) -> None:
        """A `checkpoint_state`, written to a temporary file and renamed."""
        write_atomic(self.output / CHECKPOINT, lambda temporary: torch.save(state, temporary))

    def checkpoint_state(self, epochs_done: int) -> dict:
        """Everything a resume needs, copied now (the optimizer's state tensors change in place each step)."""
        return {
            "config": self.config.to_dict(),
            "manifest_sha256": self.manifest_sha256,
            "epochs_done": epochs_done,
            "processes": self.accelerator.num_processes,
            "trainable": self.method.trainable_state(self.accelerator.unwrap_model(self.module)),
            "optimizer": copy.deepcopy(self.optimizer.state_dict()),
            "scheduler": copy.deepcopy(self.scheduler.state_dict()),
            "rng": {
                "python": random.getstate(),
                "numpy": np.random.get_state(),
                "torch": torch.get_rng_state(),
                "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            },
            "history": [asdict(result) for result in self.history],
            "best_epoch": self.best_epoch,
            "best_val_loss": self.best_val_loss,
            "validation_pairs": self.validation_pairs_list(),
            "seconds": dict(self.seconds),
            "stopped_early": self.stopped_early,
        }

    def validation_pairs_list(self) -> list[list[int]]:
        """The validation loss's (image index, timestep) pairs, as a checkpoint records them."""
        return [self.val_images.tolist(), self.val_timesteps.tolist()]

    def load_checkpoint(self) -> None:
        """Restore a checkpoint written by the same config on the same dataset."""
        # A kill during a save leaves its temporary file (never the checkpoint itself half-written).
        for stale in self.output.glob(f".{CHECKPOINT}-*"):
            stale.unlink()
        state = torch.load(self.output / CHECKPOINT, map_location="cpu", weights_only=False)
        saved, current = state["config"], self.config.to_dict()
        changed = sorted(
            key
            for key in set(saved) | set(current)
            if key not in RESUMABLE_CHANGES and saved.get(key) != current.get(key)
        )
        if changed:
            details = ", ".join(f"{key} {saved.get(key)!r} -> {current.get(key)!r}" for key in changed[:3])
            raise UserInputError(
                f"cannot resume {self.output}: its config differs ({details}); resume with the original options "
                "or train into a new --output."
            )
        if state["manifest_sha256"] != self.manifest_sha256:
            raise UserInputError(
                f"cannot resume {self.output}: the dataset changed since the checkpoint; train into a new --output."
            )
        if state.get("validation_pairs") != self.validation_pairs_list():
            # The history's losses and the best epoch were scored on other pairs (a checkpoint from before
            # validation paired images with timesteps): the next epochs' losses could not be compared with them.
            raise UserInputError(
                f"cannot resume {self.output}: its validation loss was measured on other (image, timestep) pairs "
                "(a checkpoint written by an earlier peftlab); train into a new --output."
            )
        saved_processes, processes = state.get("processes", 1), self.accelerator.num_processes
        if saved_processes != processes:
            # Each process's share of every batch, and so the weights, depend on the number of processes.
            raise UserInputError(
                f"cannot resume {self.output} with {processes} process(es): it was trained with "
                f"{saved_processes}; resume with `--num_processes {saved_processes}` (accelerate launch) or "
                "train into a new --output."
            )
        self.method.load_trainable_state(self.accelerator.unwrap_model(self.module), state["trainable"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        random.setstate(state["rng"]["python"])
        np.random.set_state(state["rng"]["numpy"])
        torch.set_rng_state(state["rng"]["torch"])
        if state["rng"]["cuda"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["rng"]["cuda"])
        self.history = [EpochResult(**result) for result in state["history"]]
        self.best_epoch, self.best_val_loss = state["best_epoch"], state["best_val_loss"]
        self.stopped_early = state["stopped_early"]
        self.resumed_from = state["epochs_done"]
        self.start_epoch = self.config.epochs if self.stopped_early else state["epochs_done"]

    def finish(self) -> TrainingResult:
        """Copy the best weights to the top of OUT and write metrics.csv, loss.png and run.json."""
        files: dict[str, str] = {}
        with self.phase("save"):
            if self.accelerator.is_main_process:
                for path in sorted((self.output / "best").iterdir()):
                    write_atomic(
                        self.output / path.name,
                        lambda temporary, source=path: shutil.copyfile(source, temporary),
                    )
                    files[path.name] = str(self.output / path.name)
                write_metrics_csv(self.output / "metrics.csv", self.history)
                write_loss_plot(
                    self.output / "loss.png",
                    self.history,
                    self.best_epoch,
                    f"{self.config.method} on {self.dataset.name}",
                )
                files.update(
                    {name: str(self.output / name) for name in ("metrics.csv", "loss.png", "run.json")}
                )
                files.update(
                    {
                        "best": str(self.output / "best"),
                        "last": str(self.output / "last"),
                        "checkpoint": str(self.output / CHECKPOINT),
                    }
                )
        result = TrainingResult(
            output=self.output,
            method=self.config.method,
            epochs=self.history,
            best_epoch=self.best_epoch,
            best_val_loss=self.best_val_loss,
            stopped_early=self.stopped_early,
            resumed_from_epoch=self.resumed_from,
            seconds=dict(self.seconds),
            files=files,
        )
        if self.accelerator.is_main_process:
            write_run_json(
                self.output / "run.json",
                {
                    "config": self.config.to_dict(),
                    "base_model": self.method.base_model,
                    "dataset": str(self.dataset.resolve()),
                    "dataset_manifest_sha256": self.manifest_sha256,
                    "processes": self.accelerator.num_processes,
                    # Samples per optimizer step over every process.
                    "global_batch": self.config.batch_size
                    * self.accelerator.num_processes
                    * self.config.gradient_accumulation,
                    "device": str(self.accelerator.device),
                    "mixed_precision": self.mixed_precision,
                    "max_caption_tokens": self.config.max_caption_tokens,
                    "captions_truncated": self.captions_truncated,
                    "captions": self.captions_total,
                    "warnings": self.warnings,
                    "best_epoch": result.best_epoch,
                    "best_val_loss": result.best_val_loss,
                    "stopped_early": self.stopped_early,
                    "resumed_from_epoch": result.resumed_from_epoch,
                    "seconds": result.seconds,
                    "epochs": [asdict(epoch) for epoch in self.history],
                    "files": files,
                },
            )
        self.accelerator.wait_for_everyone()
        return result


def rows_of(value: torch.Tensor | None, rows: torch.Tensor) -> torch.Tensor | None:
    """`value[rows]`, or None for a tensor the model's family does without."""
    return None if value is None else value[rows]


def scaled_moments(moments: torch.Tensor, scale: float) -> tuple[torch.Tensor, torch.Tensor]:
    """The VAE posterior's mean and standard deviation times the latent scale, contiguous float32."""
    mean, logvar = moments.float().chunk(2, dim=1)
    # As diffusers' DiagonalGaussianDistribution: log-variance clamped to [-30, 20].
    std = torch.exp(0.5 * logvar.clamp(-30.0, 20.0))
    return (mean * scale).contiguous(), (std * scale).contiguous()


def posterior_sample(mean: torch.Tensor, std: torch.Tensor, eps: torch.Tensor | None = None) -> torch.Tensor:
    """A latent drawn from the (pre-scaled) VAE posterior, mean + std * eps, in one fused op."""
    if eps is None:
        # Drawn by shape, not randn_like: a channels-last `mean` (the VAE's output) would fill the same
        # numbers in another order, so caching the latents or not would train different weights.
        eps = torch.randn(mean.shape, device=mean.device, dtype=mean.dtype)
    return torch.addcmul(mean, std, eps)


def allow_tf32(device: torch.device) -> None:
    """On CUDA, let float32 matmuls and convolutions run in TF32 (~8x faster on Ampere and later, no visible
    change in the loss)."""
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True


def use_channels_last(unet: torch.nn.Module, device: torch.device) -> None:
    """On CUDA, store the UNet's convolution weights channels-last, the layout its tensor-core kernels take."""
    if device.type == "cuda":
        unet.to(memory_format=torch.channels_last)


def make_optimizer(
    parameters: list[torch.nn.Parameter], config: TrainingConfig, device: torch.device
) -> torch.optim.AdamW:
    """AdamW over the trainable parameters, fused into one kernel on the devices that have it (CPU and CUDA;
    it rounds unlike the per-tensor loop)."""
    return torch.optim.AdamW(
        parameters,
        lr=config.learning_rate,
        weight_decay=config.weight_decay,
        fused=device.type in ("cpu", "cuda"),
    )


def resolve_mixed_precision(requested: str) -> tuple[str, str]:
    """The precision to train in and why: 'auto' is bf16 on CUDA cards that have it, fp16 on older ones, else fp32."""
    if requested != "auto":
        return requested, "--mixed-precision"
    from accelerate.utils import parse_flag_from_env

    if not torch.cuda.is_available() or parse_flag_from_env("ACCELERATE_USE_CPU"):
        return "no", "auto: no CUDA device, float32"
    name = torch.cuda.get_device_name()
    if torch.cuda.is_bf16_supported(including_emulation=False):
        return "bf16", f"auto: {name} computes bf16 natively"
    return "fp16", f"auto: {name} lacks fast bf16; fp16 with a loss scaler"
