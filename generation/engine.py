"""Render prompts x seeds for each arm of a comparison (the base model and up to six adapters of any method)
under identical noise. No Django.

The base pipeline is loaded once and every adapter once: each weight adapter (LoRA, DoRA, LoHa, LoKr, OFT)
under its arm's name, of which only the rendering arm's acts, and each TI token appears only in its own arm's
prompts, so each arm sees the same model except for its own adapter. Before any image is rendered, every
adapter must prove it took effect: all its layers or its token are present, and a fixed-seed probe render
differs from the same model with the adapter untrained (a weight adapter switched off; a TI token at its
initializer's vector, or at its nearest vocabulary rows for an embedding that names no initializer), and no
render may hold NaN or Inf pixels or come out blank.
"""

from __future__ import annotations

import contextlib
import re
import string
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from generation.engine_adapters import (
    METHODS,
    WEIGHT_METHODS,
    AdapterFormat,
    adapter_activate,
    adapter_layer_count,
    adapter_run_config,
    detect_adapter,
    load_textual_inversion,
    load_weight_adapter,
    ti_initializer_token,
)
from peftlab.errors import UserInputError
from peftlab.progress import Progress, ProgressCallback, ignore_progress
from peftlab.versions import package_versions
from trainer.engine.config import CAPTION_TOKENS, TI_CAPTION_TEMPLATE
from trainer.engine.families import detect_family

BASE_ARM = "base"
MAX_ADAPTERS = 6  # base + six adapters: 21 pairs per prompt in a study, already a long questionnaire
# Arm names become peft adapter names, image rows and study columns: short, lower-case, no dots.
ARM_NAME = re.compile(r"^[a-z][a-z0-9_-]{0,29}$")
# The methods whose update diffusers' `scale` multiplies (peft's OFT ignores it; TI has none).
SCALED_METHODS = ("lora", "dora", "loha", "lokr")
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


DEFAULT_TEMPLATE = "{prompt}"
DEFAULT_TI_TEMPLATE = ti_prompt_template(TI_CAPTION_TEMPLATE)


def check_arm_name(name: str) -> None:
    """Refuse an arm name that is not a short lower-case word."""
    if not isinstance(name, str) or not ARM_NAME.match(name):
        raise UserInputError(
            f"arm name {name!r} must be 1-30 lower-case letters, digits, '_' or '-', starting with a letter."
        )


def check_template(template: str, arm: str, needs_token: bool = False) -> None:
    """Refuse a prompt template with unknown fields, without {prompt}, or (`needs_token`: a TI arm's)
    without {token}."""
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
    if needs_token and "token" not in fields:
        raise UserInputError(
            f"template {template!r} of TI arm {arm!r} must contain {{token}}, or its embedding has no effect."
        )


@dataclass(frozen=True)
class AdapterArm:
    """One adapter arm: its name, the path it loads, the method and format found there, and (TI) its token."""

    name: str
    path: str
    method: str  # lora, dora, loha, lokr, oft or ti
    format: str  # diffusers, kohya, peft or embedding
    token: str | None = None  # TI: the token its prompts use
    initializer: str | None = None  # TI: the vector's starting word when neither the file nor its run says
    scale: float = 1.0  # the multiplier of a LoRA, DoRA, LoHa or LoKr update

    @classmethod
    def detect(
        cls,
        name: str,
        path: str,
        token: str | None = None,
        initializer: str | None = None,
        scale: float = 1.0,
    ) -> AdapterArm:
        """The arm of the adapter at `path`, its method and format read from the files; a TI arm's token is
        `token`, else the one its file names (peftlab's header, a diffusers key), else `<name>`."""
        check_arm_name(name)
        detected = detect_adapter(Path(path))
        if detected.method != "ti" and (token or initializer):
            raise UserInputError(
                f"arm {name!r} is a {detected.method} adapter: a token and an initializer belong to TI arms."
            )
        if detected.method == "ti":
            token = token or detected.token or f"<{name}>"
        return cls(name, str(path), detected.method, str(detected.format), token, initializer, scale)

    def __post_init__(self) -> None:
        check_arm_name(self.name)
        if self.name == BASE_ARM:
            raise UserInputError(
                f"arm name {BASE_ARM!r} is the base model's; name the adapter arm otherwise."
            )
        if self.method not in METHODS or self.format not in tuple(AdapterFormat):
            raise UserInputError(
                f"arm {self.name!r}: unknown method {self.method!r} or format {self.format!r}."
            )
        if (self.method == "ti") != bool(self.token):
            raise UserInputError(f"arm {self.name!r}: a TI arm needs a token, and only a TI arm has one.")
        if self.token and (not self.token.strip() or " " in self.token):
            raise UserInputError(f"arm {self.name!r}: the token must be one word, got {self.token!r}.")
        if not 0 < self.scale < float("inf"):
            raise UserInputError(f"arm {self.name!r}: the scale must be a positive number, got {self.scale}.")
        if self.scale != 1 and self.method not in SCALED_METHODS:
            raise UserInputError(
                f"arm {self.name!r}: a {self.method} adapter has no scale; {', '.join(SCALED_METHODS)} have one."
            )

    @property
    def is_weights(self) -> bool:
        """A weight adapter on the model (every method but TI)."""
        return self.method in WEIGHT_METHODS


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
    arms: tuple[str, ...] = (BASE_ARM,)  # in order: "base" (optional) and every adapter arm's name
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
    adapters: tuple[AdapterArm, ...] = ()  # the adapter arms (up to MAX_ADAPTERS), each of any method
    templates: dict[str, str] = field(default_factory=dict)  # per-arm prompt templates over the defaults
    effect_threshold: float = 0.5  # minimum mean |pixel difference| (0-255) between the adapter's probes
    probe_seed: int = 0
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
        names = [adapter.name for adapter in self.adapters]
        if len(set(names)) != len(names):
            raise UserInputError(
                f"two adapters are named {sorted(n for n in names if names.count(n) > 1)[0]!r}."
            )
        if len(self.adapters) > MAX_ADAPTERS:
            raise UserInputError(
                f"{len(self.adapters)} adapters given; a run compares the base model with at most {MAX_ADAPTERS}."
            )
        expected = {BASE_ARM, *names}
        if (
            not self.arms
            or len(set(self.arms)) != len(self.arms)
            or not set(names) <= set(self.arms) <= expected
        ):
            raise UserInputError(
                f"--arms must be distinct names from {', '.join(expected)}, every adapter's among them; "
                f"got {','.join(self.arms)}."
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
        tokens = [adapter.token for adapter in self.adapters if adapter.token]
        if len(set(tokens)) != len(tokens):
            raise UserInputError(
                f"two TI arms use token {sorted(t for t in tokens if tokens.count(t) > 1)[0]!r}."
            )
        if self.effect_threshold < 0:
            raise UserInputError("--effect-threshold must be non-negative.")
        if self.max_caption_tokens not in (None, *CAPTION_TOKENS):
            raise UserInputError(
                f"--max-caption-tokens must be one of {', '.join(map(str, CAPTION_TOKENS))}, "
                f"got {self.max_caption_tokens}."
            )
        if self.safety_checker not in SAFETY_CHECKER:
            raise UserInputError(f"--safety-checker must be on or off, got {self.safety_checker!r}.")
        for arm, template in self.templates.items():
            if arm not in self.arms:
                raise UserInputError(f"a template is given for arm {arm!r}, which this run does not render.")
            self.check_template(template, arm)

    def adapter(self, arm: str) -> AdapterArm | None:
        """The adapter of `arm` (None for the base arm)."""
        return next((adapter for adapter in self.adapters if adapter.name == arm), None)

    def check_template(self, template: str, arm: str) -> None:
        """Refuse `template` for `arm` (a TI arm's must place its token)."""
        adapter = self.adapter(arm)
        check_template(template, arm, needs_token=adapter is not None and adapter.method == "ti")

    def template(self, arm: str, prompt: PromptItem) -> str:
        """The template `arm` renders `prompt` with: the prompt's own, the run's, the TI adapter's training
        caption template, or the default."""
        return prompt.templates.get(arm) or self.templates.get(arm) or self.adapter_template(arm)

    def adapter_template(self, arm: str) -> str:
        """For TI, the caption template the adapter was trained with (its run.json); the default otherwise."""
        adapter = self.adapter(arm)
        if adapter is None or adapter.method != "ti":
            return DEFAULT_TEMPLATE
        trained = adapter_run_config(Path(adapter.path)).get("caption_template")
        return ti_prompt_template(trained) if trained else DEFAULT_TI_TEMPLATE

    def render_prompt(self, arm: str, prompt: PromptItem) -> str:
        """The exact text `arm` renders for `prompt`."""
        adapter = self.adapter(arm)
        token = adapter.token if adapter and adapter.token else ""
        return self.template(arm, prompt).format(prompt=prompt.text, token=token)

    def caption_tokens(self, arm: str) -> int:
        """The prompt tokens `arm` encodes: the setting, else what its adapter's run trained with, else 77."""
        adapter = self.adapter(arm)
        trained = adapter_run_config(Path(adapter.path)).get("max_caption_tokens") if adapter else None
        return self.max_caption_tokens or trained or 77

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable copy (tuples become lists, adapters dicts)."""
        return {
            key: list(value) if isinstance(value, tuple) else value for key, value in asdict(self).items()
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> GenerationConfig:
        """The config `to_dict` wrote."""
        return cls(
            **{
                **data,
                "arms": tuple(data["arms"]),
                "seeds": tuple(data["seeds"]),
                "adapters": tuple(AdapterArm(**adapter) for adapter in data.get("adapters", ())),
            }
        )


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


@dataclass
class LoadedEmbedding:
    """A TI arm's token in the loaded pipeline: per text encoder, the encoder, the token's ids and the
    untrained reference vectors its probe renders."""

    rows: list[tuple[Any, list[int], Any]]
    reference: str  # how the effect check names the reference

    @property
    def token_ids(self) -> list[int]:
        """The token's ids in the first tokenizer."""
        return self.rows[0][1]


class Renderer:
    """A loaded base pipeline with every arm's adapter, switching between arms without reloading."""

    def __init__(self, config: GenerationConfig, progress: ProgressCallback = ignore_progress) -> None:
        self.config = config
        self.progress = progress
        self.device, self.dtype = resolve_device_dtype(config.device, config.dtype)
        progress(Progress("load model", 0, 1, overall=0.0))
        self.family = detect_family(config.model)
        self.pipe = load_pipeline(config, self.device, self.dtype)
        self.safety_checker = "off" if getattr(self.pipe, "safety_checker", None) is None else "on"
        self.embeddings: dict[str, LoadedEmbedding] = {}
        for adapter in config.adapters:
            if adapter.is_weights:
                # The arm's name is its peft adapter name: adapters of any peft types share the UNet.
                load_weight_adapter(self.pipe, Path(adapter.path), adapter.name, self.family)
            else:
                path = Path(detect_adapter(Path(adapter.path)).weights)
                initializer = ti_initializer_token(path, adapter.initializer)
                rows = load_textual_inversion(self.pipe, path, adapter.token, initializer, self.family)
                reference = (
                    "at its nearest vocabulary rows"
                    if initializer is None
                    else "with its initializer's vector"
                )
                self.embeddings[adapter.name] = LoadedEmbedding(rows, reference)
        adapter_activate(self.pipe, None)
        progress(Progress("load model", 1, 1, overall=0.0))

    @contextlib.contextmanager
    def initializer_rows(self, arm: str) -> Iterator[None]:
        """`arm`'s TI token rows, in every text encoder, hold their untrained reference for the duration (the
        initializer's vector)."""
        import torch

        saved = []
        for encoder, ids, reference in self.embeddings[arm].rows:
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

    def use_arm(self, arm: str, untrained: bool = False) -> None:
        """Put the pipeline in `arm`'s state: only its weight adapter acts (none for base, TI and `untrained`)."""
        adapter = self.config.adapter(arm)
        adapter_activate(self.pipe, arm if adapter and adapter.is_weights and not untrained else None)

    def render_batch(
        self, arm: str, texts: list[str], negatives: list[str], seeds: list[int], untrained: bool = False
    ) -> tuple[list[Any], list[bool]]:
        """PIL images of `texts` for `arm`, each from its own generator seeded with its seed, and whether the
        safety checker flagged each. `untrained`: the adapter as it was before training (a weight adapter
        switched off, the TI token at its reference vector)."""
        import numpy as np
        import torch

        adapter = self.config.adapter(arm)
        self.use_arm(arm, untrained)
        # One CPU generator per image, seeded by the image's seed: every arm gets the same initial noise,
        # whatever the device, the batch it falls in, or the order of arms.
        generators = [torch.Generator("cpu").manual_seed(seed) for seed in seeds]
        extra: dict[str, Any] = {}
        if adapter and adapter.scale != 1 and not untrained:
            extra["cross_attention_kwargs"] = {"scale": adapter.scale}
        state = (
            self.initializer_rows(arm) if untrained and arm in self.embeddings else contextlib.nullcontext()
        )
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
                source = f" with {adapter.method} adapter {adapter.path}" if adapter else ""
                raise UserInputError(
                    f"the {arm} arm{source} rendered non-finite (NaN or Inf) pixels for seed "
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
                    tokenize(
                        tokenizer, [pipe.maybe_convert_prompt(item, tokenizer) for item in items], tokens
                    )
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
        """Each adapter arm's probe difference from the same prompt with its adapter untrained; UserInputError
        for an adapter that did not load whole or shows no effect."""
        import numpy as np

        adapters = [self.config.adapter(arm) for arm in self.config.arms if arm != BASE_ARM]
        if not adapters:
            return {}
        self.progress(Progress("effect check", 0, len(adapters), overall=0.0))
        for adapter in adapters:
            if adapter.is_weights and adapter_layer_count(self.pipe, adapter.name) == 0:
                raise UserInputError(
                    f"{adapter.method} adapter {adapter.path} loaded no layer into the UNet or text encoder; "
                    "its keys do not match this model."
                )
            if not adapter.is_weights:
                self.check_token(adapter, probe)
        effects: dict[str, float] = {}
        for done, adapter in enumerate(adapters, start=1):
            arm = adapter.name
            # The same prompt, seed and loaded adapters, once as trained and once as before training (the
            # adapter off, the TI token at its initializer's vector): only what it learned can differ.
            texts, negatives, seeds = (
                [self.config.render_prompt(arm, probe)],
                [probe.negative_prompt],
                [self.config.probe_seed],
            )
            reference = self.render_batch(arm, texts, negatives, seeds, untrained=True)[0][0]
            image = self.render_batch(arm, texts, negatives, seeds)[0][0]
            difference = np.abs(np.asarray(image, dtype=np.float32) - np.asarray(reference, dtype=np.float32))
            effects[arm] = float(difference.mean())
            if np.ptp(np.asarray(image)) == 0 and np.ptp(np.asarray(reference)) > 0:
                # A flat (black) image differs from everything: that is a broken adapter, not an effect.
                raise UserInputError(
                    f"the {arm} adapter {adapter.path} renders the probe as one flat colour where the untrained "
                    "render has a picture; its weights are not finite in this model or the file is broken."
                )
            if effects[arm] <= self.config.effect_threshold:
                untrained = self.embeddings[arm].reference if arm in self.embeddings else "switched off"
                raise UserInputError(
                    f"the {arm} adapter {adapter.path} ({adapter.method}) had no visible effect: its probe "
                    f"render differs from the same adapter {untrained} by {effects[arm]:.3f} (mean |pixel "
                    f"difference|, threshold {self.config.effect_threshold}); it did not learn, or did not load."
                )
            self.progress(Progress("effect check", done, len(adapters), metrics=dict(effects), overall=0.0))
        return effects

    def check_token(self, adapter: AdapterArm, probe: PromptItem) -> None:
        """A TI arm's token has embedding rows in every text encoder, and the arm's prompt really contains it."""
        embedding = self.embeddings[adapter.name]
        token_ids = embedding.token_ids
        for encoder, ids, _ in embedding.rows:
            rows = encoder.get_input_embeddings().weight.shape[0]
            if not ids or any(token_id is None or token_id >= rows for token_id in ids):
                raise UserInputError(
                    f"token {adapter.token!r} has no embedding row after loading {adapter.path}."
                )
        converted = self.pipe.maybe_convert_prompt(
            self.config.render_prompt(adapter.name, probe), self.pipe.tokenizer
        )
        ids = self.pipe.tokenizer(converted).input_ids
        if not set(token_ids) <= set(ids):
            raise UserInputError(
                f"the {adapter.name} arm's prompt {converted!r} does not tokenize to token {adapter.token!r}; "
                f"check the {adapter.name} template."
            )

    def parameters(self, arm: str) -> dict[str, Any]:
        """The parameters recorded with each image of `arm` (its adapter's path, method, format, token, scale)."""
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
        adapter = self.config.adapter(arm)
        if adapter:
            parameters |= {"adapter": adapter.path, "method": adapter.method, "format": adapter.format}
            parameters |= {"token": adapter.token} if adapter.token else {"scale": adapter.scale}
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
                config.check_template(template, arm)
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
        device=renderer.device,
        dtype=renderer.dtype,
        versions=package_versions(),
    )
