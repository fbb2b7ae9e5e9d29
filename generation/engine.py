"""Render prompts x seeds for each arm of a comparison (base, LoRA, TI) under identical noise. No Django.

The base pipeline is loaded once; the LoRA is loaded once as a named adapter that is enabled only for the
`lora` arm, and the TI token only appears in the `ti` arm's prompts, so each arm sees the same model
except for its own method. Before any image of an adapter arm is rendered, the adapter must prove it took
effect: all its layers or its token are present, and a fixed-seed probe render differs from the same
adapter in its untrained state (LoRA at scale 0, the TI token at its initializer's vector, or at its
nearest vocabulary rows for an embedding that names no initializer), and no render may hold NaN or Inf
pixels or come out blank.
"""

from __future__ import annotations

import contextlib
import string
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from generation.engine_adapters import (
    LoraFormat,
    adapter_run_config,
    detect_lora_format,
    load_lora,
    load_textual_inversion,
    lora_layer_count,
    ti_initializer_token,
)
from peftlab.errors import UserInputError
from peftlab.progress import Progress, ProgressCallback, ignore_progress
from peftlab.versions import package_versions
from trainer.engine.config import CAPTION_TOKENS, TI_CAPTION_TEMPLATE
from trainer.engine.families import detect_family

ARMS = ("base", "lora", "ti")
# Scheduler names users type -> (diffusers class, extra config); DPM-Solver++ is the default.
SCHEDULERS: dict[str, tuple[str, dict[str, Any]]] = {
    "dpmsolver++": ("DPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver++"}),
    "ddim": ("DDIMScheduler", {}),
    "euler": ("EulerDiscreteScheduler", {}),
    "euler_a": ("EulerAncestralDiscreteScheduler", {}),
    "pndm": ("PNDMScheduler", {}),
    "unipc": ("UniPCMultistepScheduler", {}),
}
DTYPES = ("auto", "float32", "float16", "bfloat16")
TEMPLATE_FIELDS = {"prompt", "token"}
SAFETY_CHECKER = ("on", "off")


def ti_prompt_template(caption_template: str) -> str:
    """The generate template of a TI training caption template: the prompt takes the caption's place."""
    return caption_template.replace("{caption}", "{prompt}")


DEFAULT_TEMPLATES = {"base": "{prompt}", "lora": "{prompt}", "ti": ti_prompt_template(TI_CAPTION_TEMPLATE)}


def check_template(template: str, arm: str) -> None:
    """Refuse a prompt template with unknown fields, without {prompt}, or (for TI) without {token}."""
    try:
        fields = {name for _, name, _, _ in string.Formatter().parse(template) if name is not None}
    except ValueError as error:
        raise UserInputError(f"template {template!r} of arm {arm!r} is malformed: {error}.") from None
    unknown = fields - TEMPLATE_FIELDS
    if unknown:
        raise UserInputError(
            f"template {template!r} of arm {arm!r} uses {{{sorted(unknown)[0]}}}; only {{prompt}} and {{token}} exist."
        )
    if "prompt" not in fields:
        raise UserInputError(f"template {template!r} of arm {arm!r} must contain {{prompt}}.")
    if arm == "ti" and "token" not in fields:
        raise UserInputError(
            f"template {template!r} of arm 'ti' must contain {{token}}, or TI has no effect."
        )


@dataclass(frozen=True)
class PromptItem:
    """One prompt to render: `key` identifies it to the caller (e.g. a Prompt row's id)."""

    key: int
    text: str
    negative_prompt: str = ""
    templates: dict[str, str] = field(default_factory=dict)  # per-arm overrides of the run's templates


@dataclass(frozen=True)
class GenerationConfig:
    """Everything a comparison rendering needs; JSON-serialisable through `to_dict` / `from_dict`."""

    model: str  # a local diffusers folder, or a Hugging Face id (needs the hub cache offline)
    arms: tuple[str, ...] = ("base",)
    seeds: tuple[int, ...] = (0,)
    steps: int = 30
    guidance: float = 7.5
    scheduler: str = "dpmsolver++"
    width: int = 0  # 0: the model family's native size (512 for SD 1.x, 1024 for SDXL)
    height: int = 0
    batch_size: int = 4
    vae_slicing: bool = False
    vae_tiling: bool = False
    dtype: str = "auto"  # auto: float16 on CUDA, float32 elsewhere
    device: str = "auto"  # auto: cuda, then mps, then cpu
    lora: str | None = None  # diffusers file/folder, kohya file, or peft adapter folder
    ti: str | None = None  # diffusers {token: tensor} or A1111 emb_params file
    token: str | None = None
    templates: dict[str, str] = field(default_factory=dict)  # per-arm prompt templates over the defaults
    effect_threshold: float = 0.5  # minimum mean |pixel difference| (0-255) between the adapter's probes
    probe_seed: int = 0
    lora_scale: float = 1.0  # the LoRA update's multiplier in the lora arm
    ti_initializer: str | None = None  # the TI vector's starting token, when neither file nor run says
    safety_checker: str = "on"  # on: the model's safety checker runs and a flagged image fails the run
    max_caption_tokens: int | None = None  # None: each adapter arm as its run trained (77 without a run)
    vae: str | None = None  # a VAE folder or hub id instead of the model's (e.g. SDXL's fp16-fixed VAE)

    def __post_init__(self) -> None:
        model = Path(self.model)
        if model.exists() and not (model / "model_index.json").is_file():
            raise UserInputError(
                f"--model {self.model} has no model_index.json; give a diffusers pipeline folder."
            )
        if not model.exists() and (self.model.startswith((".", "/", "~")) or self.model.count("/") != 1):
            raise UserInputError(f"--model {self.model} does not exist.")
        if not self.arms or len(set(self.arms)) != len(self.arms) or set(self.arms) - set(ARMS):
            raise UserInputError(
                f"--arms must be distinct names from {', '.join(ARMS)}; got {','.join(self.arms)}."
            )
        if not self.seeds or len(set(self.seeds)) != len(self.seeds):
            raise UserInputError("--seeds must be one or more distinct integers.")
        if not self.width or not self.height:
            native = detect_family(self.model).default_size
            # Frozen: the resolved size is set once, here, so every record shows what was rendered.
            object.__setattr__(self, "width", self.width or native)
            object.__setattr__(self, "height", self.height or native)
        if self.steps < 1 or self.batch_size < 1:
            raise UserInputError("--steps and --batch-size must be at least 1.")
        if self.width % 8 or self.height % 8 or min(self.width, self.height) < 8:
            raise UserInputError(f"--size must be multiples of 8, got {self.width}x{self.height}.")
        if self.scheduler not in SCHEDULERS:
            raise UserInputError(f"--scheduler must be one of {', '.join(SCHEDULERS)}; got {self.scheduler}.")
        if self.dtype not in DTYPES:
            raise UserInputError(f"--dtype must be one of {', '.join(DTYPES)}; got {self.dtype}.")
        if ("lora" in self.arms) != (self.lora is not None):
            raise UserInputError("the 'lora' arm and --lora go together: give both or neither.")
        if ("ti" in self.arms) != (self.ti is not None) or (self.ti is None) != (self.token is None):
            raise UserInputError("the 'ti' arm, --ti and --token go together: give all three or none.")
        if self.lora is not None:
            detect_lora_format(Path(self.lora))  # fail now, not after loading the model
        if self.ti is not None and not Path(self.ti).is_file():
            raise UserInputError(f"--ti {self.ti} does not exist.")
        if self.effect_threshold < 0:
            raise UserInputError("--effect-threshold must be non-negative.")
        if not 0 < self.lora_scale < float("inf"):
            raise UserInputError(f"--lora-scale must be a positive number, got {self.lora_scale}.")
        if self.max_caption_tokens not in (None, *CAPTION_TOKENS):
            raise UserInputError(
                f"--max-caption-tokens must be one of {', '.join(map(str, CAPTION_TOKENS))}, "
                f"got {self.max_caption_tokens}."
            )
        if self.safety_checker not in SAFETY_CHECKER:
            raise UserInputError(f"--safety-checker must be on or off, got {self.safety_checker!r}.")
        for arm, template in self.templates.items():
            check_template(template, arm)

    def template(self, arm: str, prompt: PromptItem) -> str:
        """The template `arm` renders `prompt` with: the prompt's own, the run's, the TI adapter's training
        caption template, or the default."""
        return prompt.templates.get(arm) or self.templates.get(arm) or self.adapter_template(arm)

    def adapter_template(self, arm: str) -> str:
        """For TI, the caption template the adapter was trained with (its run.json); the default otherwise."""
        trained = (
            adapter_run_config(Path(self.ti)).get("caption_template") if arm == "ti" and self.ti else None
        )
        return ti_prompt_template(trained) if trained else DEFAULT_TEMPLATES[arm]

    def render_prompt(self, arm: str, prompt: PromptItem) -> str:
        """The exact text `arm` renders for `prompt`."""
        return self.template(arm, prompt).format(prompt=prompt.text, token=self.token or "")

    def caption_tokens(self, arm: str) -> int:
        """The prompt tokens `arm` encodes: the setting, else what its adapter's run trained with, else 77."""
        adapter = {"lora": self.lora, "ti": self.ti}.get(arm)
        trained = adapter_run_config(Path(adapter)).get("max_caption_tokens") if adapter else None
        return self.max_caption_tokens or trained or 77

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable copy (tuples become lists)."""
        return {
            key: list(value) if isinstance(value, tuple) else value for key, value in asdict(self).items()
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> GenerationConfig:
        """The config `to_dict` wrote."""
        return cls(**{**data, "arms": tuple(data["arms"]), "seeds": tuple(data["seeds"])})


@dataclass(frozen=True)
class RenderedImage:
    """One image of one arm, with every parameter that produced it."""

    arm: str
    prompt_key: int
    seed: int
    rendered_prompt: str
    image: Any  # PIL.Image.Image, RGB, no metadata
    parameters: dict[str, Any]


@dataclass(frozen=True)
class GenerationResult:
    """What a rendering did: counts, timings, the effect each adapter showed, and package versions."""

    images: int
    timings: dict[str, float]
    effects: dict[str, float]  # arm -> mean |pixel difference| of its probe against the base probe
    lora_format: str | None
    device: str
    dtype: str
    versions: dict[str, str]


def resolve_device_dtype(device: str, dtype: str) -> tuple[str, str]:
    """The concrete device and dtype for 'auto' settings; half precision is refused on CPU."""
    import torch

    if device == "auto":
        if torch.cuda.is_available():
            device = "cuda"
        elif torch.backends.mps.is_available():
            device = "mps"
        else:
            device = "cpu"
    if dtype == "auto":
        dtype = "float16" if device.startswith("cuda") else "float32"
    if device == "cpu" and dtype == "float16":
        raise UserInputError("--dtype float16 needs a GPU; use float32 (or bfloat16) on CPU.")
    return device, dtype


def load_pipeline(config: GenerationConfig, device: str, dtype: str) -> Any:
    """The base pipeline of the model's family (StableDiffusionPipeline, StableDiffusionXLPipeline) on
    `device`, with the configured scheduler, VAE and VAE options."""
    import diffusers
    import torch

    family = detect_family(config.model)
    # Off: no checker at all; on: the model's own checker (if it has one) and every flag is recorded.
    # SDXL pipelines have none.
    off = {"safety_checker": None, "requires_safety_checker": False} if config.safety_checker == "off" else {}
    extra = family.pipeline_kwargs() | (off if family.name == "sd15" else {})
    try:
        if config.vae:
            extra["vae"] = diffusers.AutoencoderKL.from_pretrained(config.vae, dtype=getattr(torch, dtype))
        pipe = family.pipeline().from_pretrained(config.model, dtype=getattr(torch, dtype), **extra)
    except (OSError, ValueError) as error:
        raise UserInputError(f"cannot load --model {config.model}: {str(error).splitlines()[0]}") from None
    class_name, extra = SCHEDULERS[config.scheduler]
    pipe.scheduler = getattr(diffusers, class_name).from_config(pipe.scheduler.config, **extra)
    if config.vae_slicing:
        pipe.vae.enable_slicing()
    if config.vae_tiling:
        pipe.vae.enable_tiling()
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device)


class Renderer:
    """A loaded base pipeline with the run's adapters, switching between arms without reloading."""

    def __init__(self, config: GenerationConfig, progress: ProgressCallback = ignore_progress) -> None:
        self.config = config
        self.progress = progress
        self.device, self.dtype = resolve_device_dtype(config.device, config.dtype)
        progress(Progress("load model", 0, 1, overall=0.0))
        self.family = detect_family(config.model)
        self.pipe = load_pipeline(config, self.device, self.dtype)
        self.safety_checker = "off" if getattr(self.pipe, "safety_checker", None) is None else "on"
        self.lora_format: LoraFormat | None = None
        # Per text encoder: the encoder, the TI token's ids and its untrained reference vectors.
        self.ti_rows: list[tuple[Any, list[int], Any]] = []
        self.ti_reference = "with its initializer's vector"
        if config.lora is not None:
            self.lora_format = load_lora(self.pipe, Path(config.lora), self.family)
        if config.ti is not None and config.token is not None:
            path = Path(config.ti)
            initializer = ti_initializer_token(path, config.ti_initializer)
            self.ti_rows = load_textual_inversion(self.pipe, path, config.token, initializer, self.family)
            if initializer is None:
                self.ti_reference = "at its nearest vocabulary rows"
        progress(Progress("load model", 1, 1, overall=0.0))

    @property
    def token_ids(self) -> list[int]:
        """The TI token's ids in the first tokenizer."""
        return self.ti_rows[0][1] if self.ti_rows else []

    @contextlib.contextmanager
    def initializer_rows(self) -> Iterator[None]:
        """The TI token's rows in every text encoder hold their untrained reference for the duration (the
        initializer's vector)."""
        import torch

        saved = []
        for encoder, ids, reference in self.ti_rows:
            weight = encoder.get_input_embeddings().weight
            saved.append((weight, ids, weight[ids].detach().clone()))
            with torch.no_grad():
                weight[ids] = reference.to(weight)
        try:
            yield
        finally:
            with torch.no_grad():
                for weight, ids, learned in saved:
                    weight[ids] = learned

    def use_arm(self, arm: str) -> None:
        """Put the pipeline in `arm`'s state: the LoRA is on only for the lora arm."""
        if self.lora_format is None:
            return
        if arm == "lora":
            self.pipe.enable_lora()
        else:
            self.pipe.disable_lora()

    def render_batch(
        self, arm: str, texts: list[str], negatives: list[str], seeds: list[int], untrained: bool = False
    ) -> tuple[list[Any], list[bool]]:
        """PIL images of `texts` for `arm`, each from its own generator seeded with its seed, and whether the
        safety checker flagged each. `untrained`: the adapter as it was before training (the LoRA at scale
        0, the TI token at its reference vector)."""
        import numpy as np
        import torch

        self.use_arm(arm)
        # One CPU generator per image, seeded by the image's seed: every arm gets the same initial noise,
        # whatever the device, the batch it falls in, or the order of arms.
        generators = [torch.Generator("cpu").manual_seed(seed) for seed in seeds]
        extra: dict[str, Any] = {}
        if arm == "lora":
            extra["cross_attention_kwargs"] = {"scale": 0.0 if untrained else self.config.lora_scale}
        state = self.initializer_rows() if untrained and arm == "ti" else contextlib.nullcontext()
        with torch.inference_mode(), state:
            output = self.pipe(
                **self.prompt_inputs(arm, texts, negatives),
                generator=generators,
                num_inference_steps=self.config.steps,
                guidance_scale=self.config.guidance,
                width=self.config.width,
                height=self.config.height,
                output_type="np",
                **extra,
            )
        # The pipeline's own PIL conversion turns NaN into black pixels without a word: check first.
        for pixels, seed in zip(output.images, seeds, strict=True):
            if not np.isfinite(pixels).all():
                adapter = {
                    "lora": f" with LoRA {self.config.lora}",
                    "ti": f" with embedding {self.config.ti}",
                }
                raise UserInputError(
                    f"the {arm} arm{adapter.get(arm, '')} rendered non-finite (NaN or Inf) pixels for seed "
                    f"{seed}; its weights are not finite in this model (or --dtype overflows: try float32)."
                )
        flags = getattr(output, "nsfw_content_detected", None) or [False] * len(texts)
        return self.pipe.numpy_to_pil(output.images), [bool(flag) for flag in flags]

    def prompt_inputs(self, arm: str, texts: list[str], negatives: list[str]) -> dict[str, Any]:
        """The pipeline's prompt arguments: the texts, or for longer settings the chunked encodings that
        training used (75-token chunks framed by BOS/EOS, encoded alone, concatenated)."""
        tokens = self.config.caption_tokens(arm)
        if tokens == 77:
            return {"prompt": texts, "negative_prompt": negatives}
        import torch

        from trainer.engine.families import tokenize

        pipe, family = self.pipe, self.family
        parts = [(getattr(pipe, part.tokenizer), getattr(pipe, part.encoder)) for part in family.text_parts]

        def encode(items: list[str], negative: bool) -> dict[str, Any]:
            # A multi-vector TI token spreads to <token> <token>_1 ..., as the pipeline does for text.
            ids = torch.stack(
                [
                    tokenize(tokenizer, [pipe.maybe_convert_prompt(item, tokenizer) for item in items], tokens)
                    for tokenizer, _ in parts
                ],
                dim=1,
            ).to(pipe.device)
            window = parts[0][0].model_max_length
            states, pooled = family.encode([encoder for _, encoder in parts], ids, window)
            pooled = None if pooled is None else pooled.to(pipe.unet.dtype)
            return family.prompt_arguments(states.to(pipe.unet.dtype), pooled, negative)

        return encode(texts, False) | encode(negatives, True)

    def check_effects(self, probe: PromptItem) -> dict[str, float]:
        """Each adapter arm's probe difference from the same prompt without it; UserInputError if none."""
        import numpy as np

        adapter_arms = [arm for arm in self.config.arms if arm != "base"]
        if not adapter_arms:
            return {}
        self.progress(Progress("effect check", 0, len(adapter_arms), overall=0.0))
        if "lora" in adapter_arms:
            self.use_arm("lora")
            if lora_layer_count(self.pipe) == 0:
                raise UserInputError(
                    f"LoRA {self.config.lora} loaded no active LoRA layer into the UNet or text encoder; "
                    "its keys do not match this model."
                )
        if "ti" in adapter_arms:
            self.check_token(probe)
        effects: dict[str, float] = {}
        for done, arm in enumerate(adapter_arms, start=1):
            # The same prompt, seed and loaded adapter, once as trained and once as it was before training
            # (LoRA at scale 0, the TI token at its initializer's vector): only what it learned can differ.
            texts, negatives, seeds = (
                [self.config.render_prompt(arm, probe)],
                [probe.negative_prompt],
                [self.config.probe_seed],
            )
            reference = self.render_batch(arm, texts, negatives, seeds, untrained=True)[0][0]
            image = self.render_batch(arm, texts, negatives, seeds)[0][0]
            difference = np.abs(np.asarray(image, dtype=np.float32) - np.asarray(reference, dtype=np.float32))
            effects[arm] = float(difference.mean())
            source = self.config.lora if arm == "lora" else self.config.ti
            if np.ptp(np.asarray(image)) == 0 and np.ptp(np.asarray(reference)) > 0:
                # A flat (black) image differs from everything: that is a broken adapter, not an effect.
                raise UserInputError(
                    f"the {arm} adapter {source} renders the probe as one flat colour where the untrained "
                    "render has a picture; its weights are not finite in this model or the file is broken."
                )
            if effects[arm] <= self.config.effect_threshold:
                untrained = "at scale 0" if arm == "lora" else self.ti_reference
                raise UserInputError(
                    f"the {arm} adapter {source} had no visible effect: its probe render differs from the same "
                    f"adapter {untrained} by {effects[arm]:.3f} (mean |pixel difference|, threshold "
                    f"{self.config.effect_threshold}); it did not learn, or did not load."
                )
            self.progress(
                Progress("effect check", done, len(adapter_arms), metrics=dict(effects), overall=0.0)
            )
        return effects

    def check_token(self, probe: PromptItem) -> None:
        """The TI token has embedding rows, and the ti arm's prompt really contains it."""
        for encoder, ids, _ in self.ti_rows or [(self.pipe.text_encoder, [], None)]:
            rows = encoder.get_input_embeddings().weight.shape[0]
            if not ids or any(token_id is None or token_id >= rows for token_id in ids):
                raise UserInputError(
                    f"token {self.config.token!r} has no embedding row after loading {self.config.ti}."
                )
        converted = self.pipe.maybe_convert_prompt(
            self.config.render_prompt("ti", probe), self.pipe.tokenizer
        )
        ids = self.pipe.tokenizer(converted).input_ids
        if not set(self.token_ids) <= set(ids):
            raise UserInputError(
                f"the ti arm's prompt {converted!r} does not tokenize to token {self.config.token!r}; "
                "check the ti template."
            )

    def parameters(self, arm: str) -> dict[str, Any]:
        """The parameters recorded with each image of `arm`."""
        parameters: dict[str, Any] = {
            "model": self.config.model,
            "steps": self.config.steps,
            "guidance": self.config.guidance,
            "scheduler": self.config.scheduler,
            "width": self.config.width,
            "height": self.config.height,
            "batch_size": self.config.batch_size,
            "dtype": self.dtype,
            "device": self.device,
            "safety_checker": self.safety_checker,
            "max_caption_tokens": self.config.caption_tokens(arm),
        }
        if arm == "lora":
            parameters |= {
                "lora": self.config.lora,
                "lora_format": str(self.lora_format),
                "lora_scale": self.config.lora_scale,
            }
        if arm == "ti":
            parameters |= {"ti": self.config.ti, "token": self.config.token}
        return parameters

    def render_arm(self, arm: str, prompts: list[PromptItem]) -> Iterator[RenderedImage]:
        """Every prompt x seed of `arm`, in batches of `batch_size`."""
        items = [(prompt, seed) for prompt in prompts for seed in self.config.seeds]
        parameters = self.parameters(arm)
        # The whole run's share: arms render one after another, each the same number of images.
        before = self.config.arms.index(arm) * len(items)
        whole = len(self.config.arms) * len(items)
        self.progress(Progress(f"render {arm}", 0, len(items), overall=before / whole))
        for start in range(0, len(items), self.config.batch_size):
            batch = items[start : start + self.config.batch_size]
            images, flags = self.render_batch(
                arm,
                [self.config.render_prompt(arm, prompt) for prompt, _ in batch],
                [prompt.negative_prompt for prompt, _ in batch],
                [seed for _, seed in batch],
            )
            for (prompt, seed), image, flagged in zip(batch, images, flags, strict=True):
                yield RenderedImage(
                    arm=arm,
                    prompt_key=prompt.key,
                    seed=seed,
                    rendered_prompt=self.config.render_prompt(arm, prompt),
                    image=image,
                    parameters=parameters
                    | {"negative_prompt": prompt.negative_prompt, "nsfw_content_detected": flagged},
                )
            done = start + len(batch)
            self.progress(Progress(f"render {arm}", done, len(items), overall=(before + done) / whole))


def generate(
    config: GenerationConfig,
    prompts: list[PromptItem],
    on_image: Callable[[RenderedImage], None],
    progress: ProgressCallback = ignore_progress,
) -> GenerationResult:
    """Render every prompt x seed for each arm, handing each image to `on_image`; adapters are checked first."""
    if not prompts:
        raise UserInputError("the prompt set is empty; load prompts into it first.")
    for prompt in prompts:
        for arm, template in prompt.templates.items():
            if arm in config.arms:
                check_template(template, arm)
    started = time.perf_counter()
    renderer = Renderer(config, progress)
    timings = {"load_s": time.perf_counter() - started}
    checked = time.perf_counter()
    # Every adapter proves its effect before any image of any arm exists, so no image of an adapter
    # without effect is ever handed out.
    effects = renderer.check_effects(prompts[0])
    timings["check_s"] = time.perf_counter() - checked
    count = 0
    flagged: list[RenderedImage] = []
    for arm in config.arms:
        arm_started = time.perf_counter()
        for image in renderer.render_arm(arm, prompts):
            on_image(image)
            count += 1
            if image.parameters["nsfw_content_detected"]:
                flagged.append(image)
        timings[f"render_{arm}_s"] = time.perf_counter() - arm_started
    if flagged:
        # A flagged image is black: in a study it would lose every comparison for a reason that is not its arm.
        first = flagged[0]
        raise UserInputError(
            f"the safety checker flagged {len(flagged)} of {count} images (e.g. arm {first.arm}, prompt "
            f"{first.prompt_key}, seed {first.seed}); they are black and no image of this run may reach a "
            "study: render with other seeds or prompts, or with --safety-checker off."
        )
    timings["total_s"] = time.perf_counter() - started
    render_s = sum(value for key, value in timings.items() if key.startswith("render_"))
    timings["images_per_s"] = count / render_s if render_s else 0.0
    return GenerationResult(
        images=count,
        timings=timings,
        effects=effects,
        lora_format=str(renderer.lora_format) if renderer.lora_format else None,
        device=renderer.device,
        dtype=renderer.dtype,
        versions=package_versions(),
    )
