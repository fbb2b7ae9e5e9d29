"""Model families behind one interface, as diffusers' pipeline classes are: SD 1.x and SDXL.

A family knows its pipeline class, its text encoders (one for SD 1.x; two for SDXL, the second with a
projection), how captions become the UNet's conditioning (SDXL: both encoders' penultimate hidden states
side by side, encoder 2's pooled output and the size-and-crop ids), and how its files are named (kohya
module names, A1111 embedding keys). It is detected from the model folder's `model_index.json`. Training,
proofs and generation ask the family; none of them names one.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from peftlab.errors import UserInputError

if TYPE_CHECKING:  # torch is imported where a family computes: the web app reads families without it
    import torch

CAPTION_CHUNKS = {77: 1, 150: 2, 225: 3}  # --max-caption-tokens -> 75-token chunks
# diffusers' resnet layer names -> the original (SGM) UNet's, which kohya's SDXL files use.
SGM_RESNET_LAYERS = {
    "norm1": "in_layers.0",
    "conv1": "in_layers.2",
    "time_emb_proj": "emb_layers.1",
    "norm2": "out_layers.0",
    "conv2": "out_layers.3",
    "conv_shortcut": "skip_connection",
}


@dataclass(frozen=True)
class TextPart:
    """One tokenizer and text encoder of a pipeline: their subfolders (= pipeline arguments) and class."""

    tokenizer: str
    encoder: str
    encoder_class: str  # a transformers class name


@dataclass(frozen=True)
class Family:
    """What differs between model families; SD 1.x's behaviour unless a subclass says otherwise."""

    name: str  # the registry key
    label: str  # how messages name it
    pipeline_class: str  # the diffusers pipeline class name, as model_index.json's _class_name
    text_parts: tuple[TextPart, ...]
    embedding_keys: tuple[str, ...]  # the A1111/ComfyUI embedding file's key per text encoder
    embedding_files: tuple[str, ...]  # diffusers-style embedding files, one per text encoder
    default_size: int  # the pipeline's native image side in pixels
    kohya_version: str  # kohya's ss_base_model_version

    def pipeline(self) -> type:
        """The diffusers pipeline class."""
        import diffusers

        return getattr(diffusers, self.pipeline_class)

    def pipeline_kwargs(self) -> dict[str, Any]:
        """Arguments every pipeline of the family is built with, besides its components."""
        return {}

    def load_text_parts(self, model: str, dtype: torch.dtype) -> tuple[list[Any], list[Any]]:
        """The tokenizers and the text encoders (in `dtype`) of a diffusers folder or hub id."""
        import transformers

        tokenizers, encoders = [], []
        for part in self.text_parts:
            tokenizers.append(transformers.CLIPTokenizer.from_pretrained(model, subfolder=part.tokenizer))
            encoder_class = getattr(transformers, part.encoder_class)
            encoders.append(encoder_class.from_pretrained(model, subfolder=part.encoder, dtype=dtype))
        return tokenizers, encoders

    def tokenize(
        self, tokenizers: list[Any], captions: list[str], max_caption_tokens: int = 77
    ) -> torch.Tensor:
        """Token ids [n, encoders, chunks x window], one row of ids per tokenizer (their padding differs)."""
        import torch

        return torch.stack(
            [tokenize(tokenizer, captions, max_caption_tokens) for tokenizer in tokenizers], dim=1
        )

    def encode(
        self, encoders: list[Any], ids: torch.Tensor, window: int
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(hidden states [n, length, width], pooled embedding [n, width] or None): SD 1.x's last hidden
        states and no pooled embedding."""
        return encode_text(encoders[0], ids[:, 0], window), None

    def image_conditions(
        self, sizes: list[tuple[int, int, int, int]], resolution: int
    ) -> torch.Tensor | None:
        """Per image, what the UNet is told of its size and crop; SD 1.x is told nothing."""
        return None

    def unet_kwargs(self, pooled: torch.Tensor | None, conditions: torch.Tensor | None) -> dict[str, Any]:
        """The UNet's extra conditioning arguments for a batch."""
        return {}

    def prompt_arguments(
        self, states: torch.Tensor, pooled: torch.Tensor | None, negative: bool
    ) -> dict[str, Any]:
        """The pipeline arguments that pass encoded prompts (or negative prompts)."""
        return {"negative_prompt_embeds" if negative else "prompt_embeds": states}

    def kohya_unet_name(self, module: str) -> str:
        """kohya's name of a UNet module path: diffusers' path with underscores (kohya's SD 1.x UNet)."""
        return "lora_unet_" + module.replace(".", "_")


@dataclass(frozen=True)
class SdxlFamily(Family):
    """SDXL: two text encoders, pooled and size-and-crop conditioning, the original (SGM) UNet's names in
    kohya files."""

    def pipeline_kwargs(self) -> dict[str, Any]:
        # The invisible watermark needs a package the study does not use; the images stay as rendered.
        return {"add_watermarker": False}

    def encode(
        self, encoders: list[Any], ids: torch.Tensor, window: int
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Both encoders' penultimate hidden states, concatenated along the width (768 + 1280 = 2048 on SDXL),
        and encoder 2's projected pooled output of the first chunk, as diffusers' SDXL pipeline encodes."""
        count, _, length = ids.shape
        states, pooled = [], None
        for index, encoder in enumerate(encoders):
            output = encoder(ids[:, index].reshape(-1, window), output_hidden_states=True)
            hidden = output.hidden_states[-2]
            states.append(hidden.reshape(count, length, hidden.shape[-1]))
            if index == len(encoders) - 1:
                pooled = output.text_embeds.reshape(count, -1, output.text_embeds.shape[-1])[:, 0]
        import torch

        return torch.cat(states, dim=-1), pooled

    def image_conditions(
        self, sizes: list[tuple[int, int, int, int]], resolution: int
    ) -> torch.Tensor | None:
        """(original height, original width, crop top, crop left, target height, target width) per image, as
        diffusers' SDXL training examples pass them; `sizes` are (height, width, top, left) of each source."""
        import torch

        return torch.tensor([[*size, resolution, resolution] for size in sizes], dtype=torch.float32)

    def unet_kwargs(self, pooled: torch.Tensor | None, conditions: torch.Tensor | None) -> dict[str, Any]:
        return {"added_cond_kwargs": {"text_embeds": pooled, "time_ids": conditions}}

    def prompt_arguments(
        self, states: torch.Tensor, pooled: torch.Tensor | None, negative: bool
    ) -> dict[str, Any]:
        prefix = "negative_" if negative else ""
        return {f"{prefix}prompt_embeds": states, f"{prefix}pooled_prompt_embeds": pooled}

    def kohya_unet_name(self, module: str) -> str:
        """kohya's SDXL name: the original UNet's block numbering (`input_blocks_4_1_...`), as sd-scripts
        writes it and A1111, ComfyUI and diffusers read it; two blocks per level plus a down/upsampler."""
        parts = module.split(".")
        per_level = 3  # SDXL's layers_per_block (2) + the sampler
        if "resnets" in parts:
            # A resnet's layers have other names in the original UNet (as ComfyUI's UNET_MAP_RESNET lists them).
            at = parts.index("resnets") + 2
            layer = ".".join(parts[at:])
            parts = [*parts[:at], *SGM_RESNET_LAYERS.get(layer, layer).split(".")]
        if parts[0] == "down_blocks" and parts[2] in ("attentions", "resnets"):
            block = 1 + int(parts[1]) * per_level + int(parts[3])
            sgm = ["input_blocks", str(block), "1" if parts[2] == "attentions" else "0", *parts[4:]]
        elif parts[0] == "up_blocks" and parts[2] in ("attentions", "resnets"):
            block = int(parts[1]) * per_level + int(parts[3])
            sgm = ["output_blocks", str(block), "1" if parts[2] == "attentions" else "0", *parts[4:]]
        elif parts[0] == "mid_block" and parts[1] == "attentions":
            sgm = ["middle_block", "1", *parts[3:]]
        elif parts[0] == "mid_block" and parts[1] == "resnets":
            sgm = ["middle_block", str(2 * int(parts[2])), *parts[3:]]  # resnet, attention, resnet
        else:
            raise ValueError(f"no kohya SDXL name for UNet module {module!r}")
        return "lora_unet_" + "_".join(sgm)


SD15 = Family(
    name="sd15",
    label="SD 1.x",
    pipeline_class="StableDiffusionPipeline",
    text_parts=(TextPart("tokenizer", "text_encoder", "CLIPTextModel"),),
    embedding_keys=("emb_params",),
    embedding_files=("learned_embeds.safetensors",),
    default_size=512,
    kohya_version="sd_v1",
)
SDXL = SdxlFamily(
    name="sdxl",
    label="SDXL",
    pipeline_class="StableDiffusionXLPipeline",
    text_parts=(
        TextPart("tokenizer", "text_encoder", "CLIPTextModel"),
        TextPart("tokenizer_2", "text_encoder_2", "CLIPTextModelWithProjection"),
    ),
    embedding_keys=("clip_l", "clip_g"),
    embedding_files=("learned_embeds.safetensors", "learned_embeds_2.safetensors"),
    default_size=1024,
    kohya_version="sdxl_base_v1-0",
)
FAMILIES: dict[str, Family] = {family.name: family for family in (SD15, SDXL)}
BY_PIPELINE = {family.pipeline_class: family for family in FAMILIES.values()}


def read_model_index(model: str) -> dict[str, Any]:
    """A diffusers folder's or hub id's model_index.json (a hub id from the local cache or the hub)."""
    folder = Path(model).expanduser()
    try:
        if folder.is_dir():
            return json.loads((folder / "model_index.json").read_text(encoding="utf-8"))
        from huggingface_hub import hf_hub_download

        return json.loads(Path(hf_hub_download(model, "model_index.json")).read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise UserInputError(
            f"cannot load the model {model!r} (its model_index.json: {type(error).__name__}); give a local "
            "diffusers folder, or a hub id (downloads need network access)."
        ) from None


def detect_family(model: str) -> Family:
    """The family of a diffusers pipeline, from its model_index.json `_class_name`."""
    class_name = read_model_index(model).get("_class_name", "")
    if class_name not in BY_PIPELINE:
        known = ", ".join(f"{family.pipeline_class} ({family.label})" for family in FAMILIES.values())
        raise UserInputError(
            f"the model {model!r} is a {class_name or 'pipeline without _class_name'}; peftlab takes {known}."
        )
    return BY_PIPELINE[class_name]


def refuse_other_family(what: str, kind: str, found: Family | None, model: Family) -> None:
    """One line naming both families when an adapter file (`what`, a `kind` such as LoRA) belongs to
    another family than the model."""
    if found is not None and found is not model:
        raise UserInputError(
            f"{what} is an {found.label} {kind} but the model is {model.label}; use an {model.label} {kind}, "
            f"or an {found.label} model."
        )


def tokenize(tokenizer: Any, captions: list[str], max_caption_tokens: int = 77) -> torch.Tensor:
    """Token ids [n, chunks x window]: one window padded as the pipeline does at inference, or (for longer
    captions) 75-token chunks each framed by BOS and EOS and kept whole: A1111's layout without its comma
    backtrack; kohya's v1 form drops the inner BOS/EOS states after encoding (docs/training.md)."""
    import torch

    window = tokenizer.model_max_length
    chunks = CAPTION_CHUNKS[max_caption_tokens]
    # Tokenized to chunks x 75 caption tokens between one BOS and one EOS, padded; then cut into chunks.
    ids = tokenizer(
        captions,
        padding="max_length",
        max_length=chunks * (window - 2) + 2,
        truncation=True,
        return_tensors="pt",
    ).input_ids
    if chunks == 1:
        return ids
    body = ids[:, 1:-1].reshape(len(captions), chunks, window - 2)
    bos = torch.full((len(captions), chunks, 1), tokenizer.bos_token_id, dtype=ids.dtype)
    eos = torch.full((len(captions), chunks, 1), tokenizer.eos_token_id, dtype=ids.dtype)
    return torch.cat([bos, body, eos], dim=2).reshape(len(captions), chunks * window)


def encode_text(text_encoder: Any, ids: torch.Tensor, window: int) -> torch.Tensor:
    """Last hidden states [n, chunks x window, width]: each window-sized chunk encoded on its own, then
    concatenated along the sequence axis (the UNet's cross-attention takes any length)."""
    count, length = ids.shape
    states = text_encoder(ids.reshape(-1, window))[0]
    return states.reshape(count, length, states.shape[-1])
