"""Training configuration: one dataclass per method, whose field help text builds the command-line options.

Values come from defaults, then a TOML or JSON file (`--config`), then command-line flags (flags win).
"""

from __future__ import annotations

import argparse
import json
import math
import tomllib
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from peftlab.errors import UserInputError

DEFAULT_MODEL = "stable-diffusion-v1-5/stable-diffusion-v1-5"
SCHEDULERS = ("constant", "constant_with_warmup", "cosine", "linear")
PRECISIONS = ("auto", "no", "fp16", "bf16")
CAPTION_TOKENS = (77, 150, 225)
# One template for TI, shared by training captions and generate's prompts, so the token reads as it was learned.
TI_CAPTION_TEMPLATE = "An image of {token}, {caption}"


def option(default: Any, help: str, **extra: Any) -> Any:
    """A dataclass field whose `help` becomes the command-line option's help text."""
    return field(default=default, metadata={"help": help, **extra})


@dataclass(frozen=True)
class TrainingConfig:
    """What both methods share: the model, the optimisation and the loop's schedule."""

    model: str = option(
        DEFAULT_MODEL,
        "Local diffusers folder or hub id of the base model (SD 1.x or SDXL, from its model_index.json).",
    )
    vae: str = option(
        "",
        "Folder or hub id of a VAE to use instead of the model's, e.g. madebyollin/sdxl-vae-fp16-fix (SDXL's VAE "
        "fixed for float16); default the model's own, kept in float32 where its config says float16 overflows.",
    )
    epochs: int = option(10, "Passes over train.txt.")
    batch_size: int = option(1, "Images per step on each process.")
    gradient_accumulation: int = option(1, "Steps whose gradients add up before each optimizer step.")
    learning_rate: float = option(1e-4, "Peak learning rate of AdamW.")
    lr_scheduler: str = option("cosine", "Learning-rate schedule.", choices=SCHEDULERS)
    warmup_steps: int = option(0, "Optimizer steps of linear warm-up.")
    weight_decay: float = option(1e-2, "AdamW weight decay.")
    seed: int = option(42, "Seed of initialisation, data order, noise and the validation noise.")
    resolution: int = option(512, "Training side in pixels; images of another size are resized.")
    mixed_precision: str = option(
        "auto",
        "Mixed precision of the frozen models and the forward pass; auto: bf16 on CUDA cards that compute it, "
        "fp16 on older cards, no (float32) elsewhere.",
        choices=PRECISIONS,
    )
    gradient_checkpointing: bool = option(False, "Recompute activations in the backward pass to save memory.")
    compile: bool = option(
        False, "torch.compile the UNet: slower first steps, faster later ones where it pays."
    )
    snr_gamma: float = option(0.0, "Min-SNR loss weighting gamma (5 is usual); 0 turns it off.")
    max_grad_norm: float = option(1.0, "Clip gradients to this norm; 0 turns clipping off.")
    checkpoint_every: int = option(1, "Write a resumable checkpoint every N epochs (the last epoch always).")
    background_saves: bool = option(
        True,
        "Write and prove each epoch's best/, last/ and checkpoint on a background thread while the next epoch "
        "trains (the same files and guarantees; see docs/training.md).",
    )
    early_stopping_patience: int = option(
        0, "Stop after N epochs without a lower validation loss; 0 never stops."
    )
    validation_timesteps: int = option(
        10,
        "Evenly spaced timesteps of the deterministic validation loss: it scores max(validation images, this) "
        "fixed (image, timestep) pairs, each image and each timestep at least once.",
    )
    max_caption_tokens: int = option(
        77,
        "Caption tokens the text encoder sees: 77 (one window; longer captions are cut), or 150 / 225 "
        "(75-token chunks, each framed by BOS/EOS, encoded separately and concatenated: 154 / 231 positions; "
        "see docs/training.md for how this differs from A1111 and kohya).",
        choices=CAPTION_TOKENS,
    )
    cache: bool = option(True, "Cache VAE latents (and frozen text-encoder outputs) on disk and reuse them.")
    cache_dir: str = option("", "Folder of the caches (default: DATASET/.cache).")

    method = ""  # set by the subclasses; not a field, so it is not an option

    def __post_init__(self) -> None:
        positive = ("epochs", "batch_size", "gradient_accumulation", "resolution", "checkpoint_every")
        for name in positive + ("validation_timesteps",):
            if getattr(self, name) < 1:
                raise UserInputError(f"--{flag(name)} must be at least 1, got {getattr(self, name)}.")
        for name in ("warmup_steps", "early_stopping_patience"):
            if getattr(self, name) < 0:
                raise UserInputError(f"--{flag(name)} must be 0 or more, got {getattr(self, name)}.")
        for name in ("learning_rate", "weight_decay", "snr_gamma", "max_grad_norm"):
            value = getattr(self, name)
            if not math.isfinite(value) or value < 0 or (name == "learning_rate" and value == 0):
                raise UserInputError(f"--{flag(name)} must be a finite positive number, got {value}.")
        if self.lr_scheduler not in SCHEDULERS:
            raise UserInputError(
                f"--lr-scheduler must be one of {', '.join(SCHEDULERS)}, got {self.lr_scheduler!r}."
            )
        if self.mixed_precision not in PRECISIONS:
            raise UserInputError(
                f"--mixed-precision must be one of {', '.join(PRECISIONS)}, got {self.mixed_precision!r}."
            )
        if self.max_caption_tokens not in CAPTION_TOKENS:
            raise UserInputError(
                f"--max-caption-tokens must be one of {', '.join(map(str, CAPTION_TOKENS))}, "
                f"got {self.max_caption_tokens}."
            )
        if self.resolution % 8:
            raise UserInputError(f"--resolution must be a multiple of 8, got {self.resolution}.")
        if not self.model:
            raise UserInputError("--model is empty; give a local diffusers folder or a hub id.")

    def to_dict(self) -> dict[str, Any]:
        """The config as plain JSON-able values, with its method."""
        return {"method": self.method, **asdict(self)}


@dataclass(frozen=True)
class AdapterTrainingConfig(TrainingConfig):
    """What every PEFT adapter on the UNet shares: which modules it adapts; the base model stays frozen."""

    target_modules: str = option("to_q,to_k,to_v,to_out.0", "Comma-separated UNet module names to adapt.")

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.target_module_list:
            raise UserInputError("--target-modules is empty; give e.g. to_q,to_k,to_v,to_out.0.")
        # Each method's own options say their range in their field's metadata.
        for item in fields(self):
            value, bound = getattr(self, item.name), item.metadata.get("bound")
            if bound == "positive" and (not math.isfinite(value) or value <= 0):
                kind = "integer" if isinstance(value, int) else "number"
                raise UserInputError(f"--{flag(item.name)} must be a positive {kind}, got {value}.")
            if bound == "probability" and not 0 <= value < 1:
                raise UserInputError(f"--{flag(item.name)} must be in [0, 1), got {value}.")

    @property
    def target_module_list(self) -> list[str]:
        """The target modules as a list."""
        return [name.strip() for name in self.target_modules.split(",") if name.strip()]


@dataclass(frozen=True)
class LoraTrainingConfig(AdapterTrainingConfig):
    """LoRA (Hu et al. 2021) on the UNet's attention projections: W + alpha/r * B A."""

    rank: int = option(4, "Rank r of the update's low-rank factors.", bound="positive")
    alpha: float = option(4.0, "Alpha; the update is scaled by alpha / rank.", bound="positive")
    dropout: float = option(0.0, "Dropout on the LoRA branch.", bound="probability")

    method = "lora"


@dataclass(frozen=True)
class DoraTrainingConfig(LoraTrainingConfig):
    """DoRA (Liu et al. 2024): LoRA's direction update plus a trained magnitude per output row (PEFT use_dora)."""

    method = "dora"


@dataclass(frozen=True)
class LohaTrainingConfig(AdapterTrainingConfig):
    """LoHa (FedPara, Hyeon-Woo et al. 2022; LyCORIS): the update is the Hadamard product of two rank-r products."""

    rank: int = option(8, "LoHa rank r of each of the two products (PEFT's default).", bound="positive")
    alpha: float = option(
        8.0, "LoHa alpha; the update is scaled by alpha / rank (PEFT's default 8).", bound="positive"
    )
    rank_dropout: float = option(
        0.0, "Dropout of output rows of the update during training.", bound="probability"
    )
    module_dropout: float = option(
        0.0, "Probability of skipping a module's update in a training step.", bound="probability"
    )

    method = "loha"


@dataclass(frozen=True)
class LokrTrainingConfig(AdapterTrainingConfig):
    """LoKr (LyCORIS, Yeh et al. 2024): the update is the Kronecker product of a small and a rank-r factor."""

    rank: int = option(
        8,
        "LoKr rank r of the larger Kronecker factor when it is decomposed (PEFT's default).",
        bound="positive",
    )
    alpha: float = option(
        8.0, "LoKr alpha; the update is scaled by alpha / rank (PEFT's default 8).", bound="positive"
    )
    factor: int = option(
        -1, "Kronecker decomposition factor: the small factor's side; -1 picks the most balanced split."
    )
    decompose_both: bool = option(False, "Also decompose the small Kronecker factor into rank-r products.")
    rank_dropout: float = option(
        0.0, "Dropout of output rows of the update during training.", bound="probability"
    )
    module_dropout: float = option(
        0.0, "Probability of skipping a module's update in a training step.", bound="probability"
    )

    method = "lokr"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.factor == 0 or self.factor < -1:
            raise UserInputError(f"--factor must be -1 or a positive integer, got {self.factor}.")


@dataclass(frozen=True)
class OftTrainingConfig(AdapterTrainingConfig):
    """OFT (Qiu et al. 2023; PEFT's OFT v2): a block-diagonal orthogonal rotation of each adapted layer's input."""

    block_size: int = option(
        32,
        "Side of each orthogonal block (PEFT's default); it must divide every adapted layer's input width.",
        bound="positive",
    )
    cayley_neumann: bool = option(
        True, "Cayley-Neumann approximation of the rotation (PEFT's default; faster, 5 Neumann terms)."
    )
    module_dropout: float = option(
        0.0, "Probability of skipping a block's rotation in a training step.", bound="probability"
    )

    method = "oft"


@dataclass(frozen=True)
class TiTrainingConfig(TrainingConfig):
    """Textual Inversion: only the new token's embedding rows train."""

    learning_rate: float = option(5e-4, "Peak learning rate of AdamW.")
    lr_scheduler: str = option("constant", "Learning-rate schedule.", choices=SCHEDULERS)
    placeholder_token: str = option("", 'The new token, e.g. "<ghiblivis-style>".', required=True)
    initializer_token: str = option(
        "", "An existing single-token word whose embedding starts the new one.", required=True
    )
    num_vectors: int = option(1, "Embedding vectors behind the placeholder token.")
    caption_template: str = option(
        TI_CAPTION_TEMPLATE,
        "Training caption; {token} and {caption} are filled in. generate renders the adapter's prompts with it "
        "({caption} becomes the prompt).",
    )

    method = "ti"

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.placeholder_token:
            raise UserInputError('--placeholder-token is required, e.g. --placeholder-token "<my-style>".')
        if not self.placeholder_token.strip() or " " in self.placeholder_token:
            raise UserInputError(
                f"--placeholder-token must be one word without spaces, got {self.placeholder_token!r}."
            )
        if not self.initializer_token.strip():
            raise UserInputError("--initializer-token is empty; give one existing word such as style.")
        if self.num_vectors < 1:
            raise UserInputError(f"--num-vectors must be at least 1, got {self.num_vectors}.")
        if "{token}" not in self.caption_template:
            raise UserInputError(f"--caption-template must contain {{token}}, got {self.caption_template!r}.")
        try:
            self.caption_template.format(token="t", caption="c")
        except (KeyError, IndexError, ValueError) as error:
            raise UserInputError(
                f"--caption-template may only use {{token}} and {{caption}}: {self.caption_template!r}."
            ) from error

    @property
    def placeholder_tokens(self) -> list[str]:
        """The tokens added to the vocabulary: the placeholder, then `_1`, `_2`, ... (diffusers' convention)."""
        return [self.placeholder_token] + [
            f"{self.placeholder_token}_{i}" for i in range(1, self.num_vectors)
        ]


CONFIG_CLASSES: dict[str, type[TrainingConfig]] = {
    config.method: config
    for config in (
        LoraTrainingConfig,
        DoraTrainingConfig,
        LohaTrainingConfig,
        LokrTrainingConfig,
        OftTrainingConfig,
        TiTrainingConfig,
    )
}


def flag(name: str) -> str:
    """The command-line spelling of a field name."""
    return name.replace("_", "-")


def add_config_arguments(parser: argparse.ArgumentParser, *config_classes: type[TrainingConfig]) -> None:
    """Add one option per field of the config classes (one per name, their defaults said per method where they
    differ, and the methods that have it where not all do); unset options stay out of the parsed namespace."""
    by_name: dict[str, list[tuple[str, Any]]] = {}
    for config_class in config_classes:
        for item in fields(config_class):
            by_name.setdefault(item.name, []).append((config_class.method, item))
    for name, owners in by_name.items():
        item = owners[0][1]
        defaults = {method: entry.default for method, entry in owners}
        default = item.default if item.default is not MISSING else None
        kwargs: dict[str, Any] = {"dest": name, "default": argparse.SUPPRESS}
        if item.metadata.get("required") or default == "":
            suffix = ""
        elif len(set(map(repr, defaults.values()))) == 1:
            suffix = f" (default {default!r})"
        else:
            grouped: dict[str, list[str]] = {}
            for method, value in defaults.items():
                grouped.setdefault(repr(value), []).append(method)
            suffix = " (default " + "; ".join(f"{value} {', '.join(m)}" for value, m in grouped.items()) + ")"
        if len(owners) < len(config_classes):
            suffix += f" [{', '.join(defaults)} only]"
        kwargs["help"] = item.metadata.get("help", "") + suffix
        if isinstance(default, bool):
            kwargs["action"] = argparse.BooleanOptionalAction
        else:
            kwargs["type"] = type(default)
            if "choices" in item.metadata:
                kwargs["choices"] = item.metadata["choices"]
        parser.add_argument(f"--{flag(name)}", **kwargs)


def read_config_file(path: Path) -> dict[str, Any]:
    """The options in a TOML or JSON file, by field name (dashes or underscores)."""
    path = Path(path)
    if not path.is_file():
        raise UserInputError(f"config file {path} does not exist.")
    try:
        if path.suffix.lower() == ".json":
            values = json.loads(path.read_text(encoding="utf-8"))
        else:
            values = tomllib.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
        raise UserInputError(f"config file {path} is not valid TOML or JSON: {error}") from None
    if not isinstance(values, dict):
        raise UserInputError(f"config file {path} must hold a table of options.")
    return {key.replace("-", "_"): value for key, value in values.items()}


def build_config(method: str, file_values: dict[str, Any] | None = None, **overrides: Any) -> TrainingConfig:
    """The config of `method` from defaults, then `file_values`, then `overrides`."""
    if method not in CONFIG_CLASSES:
        raise UserInputError(f"unknown training method {method!r}; use one of {', '.join(CONFIG_CLASSES)}.")
    config_class = CONFIG_CLASSES[method]
    values = {**(file_values or {}), **overrides}
    values.pop("method", None)
    known = {item.name: item for item in fields(config_class)}
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise UserInputError(f"unknown {method} option(s): {', '.join(unknown)}.")
    for name, value in values.items():
        expected = type(known[name].default)
        # TOML and JSON write 1e-4 as a float and 5 as an int; accept ints where floats are expected.
        if expected is float and isinstance(value, int) and not isinstance(value, bool):
            values[name] = float(value)
        elif not isinstance(values[name], expected) or (expected is int and isinstance(value, bool)):
            raise UserInputError(f"option {flag(name)} must be {expected.__name__}, got {value!r}.")
    return config_class(**values)
