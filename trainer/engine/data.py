"""The base model's parts and the prepared dataset as tensors, with VAE latents and text-encoder outputs
cached on disk (keyed by model, dtype, resolution or caption length, and content) so later runs reuse them."""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from peftlab.errors import UserInputError
from peftlab.files import write_atomic
from trainer.engine.dataset import read_split, sha256_file
from trainer.engine.families import CAPTION_CHUNKS, Family, detect_family

PREDICTION_TYPES = ("epsilon", "v_prediction")  # what the UNet predicts: the noise, or the velocity


class TextEncoders(torch.nn.Module):
    """A family's text encoders as one module: token ids [n, encoders, length] -> (states, pooled)."""

    def __init__(self, family: Family, encoders: list[Any], window: int) -> None:
        super().__init__()
        self.family, self.window = family, window
        self.encoders = torch.nn.ModuleList(encoders)

    def forward(self, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        return self.family.encode(list(self.encoders), ids, self.window)


@dataclass
class Components:
    """The parts of a Stable Diffusion pipeline that training touches; one tokenizer and text encoder per
    text part of the model's family (SD 1.x one, SDXL two)."""

    family: Family
    tokenizers: list[Any]
    text_encoders: list[Any]
    vae: Any
    unet: Any
    noise_scheduler: Any
    fingerprint: dict[str, str]  # per part, a hash that changes when its weights change

    @property
    def tokenizer(self) -> Any:
        """The first tokenizer (the one every family has)."""
        return self.tokenizers[0]

    @property
    def text_encoder(self) -> Any:
        """The first text encoder (the one every family has)."""
        return self.text_encoders[0]

    @functools.cached_property
    def text_model(self) -> TextEncoders:
        """Every text encoder as one module: token ids [n, encoders, length] -> (states, pooled)."""
        return TextEncoders(self.family, self.text_encoders, self.tokenizer.model_max_length)


def check_model_exists(model: str) -> None:
    """Refuse a --model that reads as a local path (not an `owner/name` hub id) and does not exist."""
    path = Path(model).expanduser()
    if not path.exists() and (model.startswith((".", "/", "~")) or model.count("/") != 1):
        raise UserInputError(
            f"--model {model}: the folder does not exist; give a local diffusers folder (with "
            "model_index.json) or a hub id such as stable-diffusion-v1-5/stable-diffusion-v1-5."
        )


def load_components(
    model: str,
    dtype: torch.dtype = torch.float32,
    text_encoder_dtype: torch.dtype = torch.float32,
    vae: str = "",
) -> Components:
    """Load tokenizers, text encoders, VAE, UNet (in `dtype`) and DDPM scheduler from a diffusers folder or hub
    id; `vae`, a folder or hub id of a VAE to use instead of the model's."""
    from diffusers import DDPMScheduler, UNet2DConditionModel

    check_model_exists(model)
    family = detect_family(model)
    try:
        tokenizers, encoders = family.load_text_parts(model, text_encoder_dtype)
        vae_model = vae_load(model, vae, dtype)
        parts = Components(
            family=family,
            tokenizers=tokenizers,
            text_encoders=encoders,
            vae=vae_model,
            unet=UNet2DConditionModel.from_pretrained(model, subfolder="unet", torch_dtype=dtype),
            noise_scheduler=DDPMScheduler.from_pretrained(model, subfolder="scheduler"),
            fingerprint={},
        )
    except (OSError, ValueError) as error:
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise UserInputError(
            f"cannot load the model {model!r} ({first_line[:200]}); give a local diffusers folder, "
            "or a hub id (downloads need network access)."
        ) from None
    prediction = parts.noise_scheduler.config.prediction_type
    if prediction not in PREDICTION_TYPES:
        # The loss knows two targets; anything else ("sample") would silently be trained as v-prediction.
        raise UserInputError(
            f"the model {model!r} predicts {prediction!r}; training supports "
            f"{' and '.join(PREDICTION_TYPES)} (set prediction_type in its scheduler/scheduler_config.json)."
        )
    text = [name for part in family.text_parts for name in (part.encoder, part.tokenizer)]
    parts.fingerprint = {part: fingerprint(model, part) for part in ("vae", *text)}
    if vae:
        parts.fingerprint["vae"] = fingerprint(vae, "")
    return parts


def vae_load(model: str, vae: str, dtype: torch.dtype) -> Any:
    """The model's VAE, or the one at `vae`; in float32 where its config says half precision overflows (SDXL's
    `force_upcast`), as diffusers' SDXL examples and pipelines do, unless a fixed VAE is given."""
    from diffusers import AutoencoderKL

    if vae:
        check_model_exists(vae)
        return AutoencoderKL.from_pretrained(vae, torch_dtype=dtype)
    loaded = AutoencoderKL.from_pretrained(model, subfolder="vae", torch_dtype=dtype)
    if dtype == torch.float16 and getattr(loaded.config, "force_upcast", False):
        loaded.to(torch.float32)
    return loaded


def fingerprint(model: str, subfolder: str) -> str:
    """A hash of a model part's files for a local folder; the hub id and part otherwise."""
    digest = hashlib.sha256(f"{subfolder}\n".encode())
    folder = Path(model) / subfolder
    if folder.is_dir():
        for path in sorted(folder.iterdir()):
            if path.is_file():
                digest.update(f"{path.name}\n{sha256_file(path)}\n".encode())
    else:
        digest.update(model.encode())
    return digest.hexdigest()


@dataclass
class Split:
    """One split of a prepared dataset: image names, captions and the images' hashes."""

    images: list[str]
    captions: list[str]
    hashes: list[str]


def read_dataset(dataset: Path, name: str) -> Split:
    """A split's rows, checking that it is not empty and that every image is there."""
    dataset = Path(dataset)
    if not dataset.is_dir():
        raise UserInputError(
            f"dataset folder {dataset} does not exist; prepare one with `manage.py prepare_dataset`."
        )
    rows = read_split(dataset, name)
    if not rows:
        raise UserInputError(
            f"{dataset / name} is empty; prepare the dataset with more images"
            + (" or a --val-fraction above 0." if name == "validation.txt" else ".")
        )
    missing = [image for image, _ in rows if not (dataset / "images" / image).is_file()]
    if missing:
        raise UserInputError(f"{dataset / 'images' / missing[0]} is missing; prepare the dataset again.")
    return Split(
        images=[image for image, _ in rows],
        captions=[caption for _, caption in rows],
        hashes=[sha256_file(dataset / "images" / image) for image, _ in rows],
    )


def load_pixels(dataset: Path, images: list[str], resolution: int) -> torch.Tensor:
    """The images as a float tensor [n, 3, resolution, resolution] in [-1, 1]."""
    arrays = []
    for name in images:
        with Image.open(Path(dataset) / "images" / name) as opened:
            image = opened.convert("RGB")
        if image.size != (resolution, resolution):
            image = image.resize((resolution, resolution), Image.Resampling.LANCZOS)
        arrays.append(np.asarray(image, dtype=np.float32))
    pixels = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2)
    return pixels / 127.5 - 1.0


class DiskCache:
    """Tensors stored one safetensors file per key; `None` as folder means nothing is stored."""

    def __init__(self, folder: Path | None) -> None:
        self.folder = folder

    def path(self, key: str) -> Path | None:
        return None if self.folder is None else self.folder / key[:2] / f"{key}.safetensors"

    def get(self, key: str) -> torch.Tensor | None:
        from safetensors.torch import load_file

        path = self.path(key)
        return load_file(path)["value"] if path is not None and path.is_file() else None

    def put(self, key: str, value: torch.Tensor) -> None:
        from safetensors.torch import save_file

        path = self.path(key)
        if path is None:
            return
        # Renamed into place, so a killed run never leaves a truncated cache entry.
        tensor = value.detach().to("cpu").contiguous()
        write_atomic(path, lambda temporary: save_file({"value": tensor}, str(temporary)))


def cache_key(*parts: object) -> str:
    """A stable hash of what determines a cached tensor."""
    return hashlib.sha256("\n".join(str(part) for part in parts).encode()).hexdigest()


@torch.no_grad()
def encode_latent_moments(
    vae: Any, pixels: torch.Tensor, device: torch.device, dtype: torch.dtype, batch_size: int = 8
) -> torch.Tensor:
    """The VAE posterior's parameters (mean and log-variance) for each image, as float32 on the CPU."""
    chunks = []
    for start in range(0, len(pixels), batch_size):
        batch = pixels[start : start + batch_size].to(device=device, dtype=dtype)
        chunks.append(vae.encode(batch).latent_dist.parameters.float().cpu())
    return torch.cat(chunks)


def cached_latent_moments(
    cache: DiskCache,
    components: Components,
    dataset: Path,
    split: Split,
    resolution: int,
    device: torch.device,
    dtype: torch.dtype,
) -> torch.Tensor:
    """The VAE moments of a split's images, from the cache where present, computed (and stored) otherwise."""
    keys = [
        cache_key("latents", components.fingerprint["vae"], resolution, dtype, image_hash)
        for image_hash in split.hashes
    ]
    found = {key: value for key in keys if (value := cache.get(key)) is not None}
    missing = [index for index, key in enumerate(keys) if key not in found]
    if missing:
        pixels = load_pixels(dataset, [split.images[index] for index in missing], resolution)
        for index, moments in zip(
            missing, encode_latent_moments(components.vae, pixels, device, dtype), strict=True
        ):
            cache.put(keys[index], moments)
            found[keys[index]] = moments
    return torch.stack([found[key] for key in keys])


def caption_token_counts(tokenizer: Any, captions: list[str]) -> list[int]:
    """Each caption's length in tokens of the model's own tokenizer, without BOS and EOS."""
    return [len(ids) for ids in tokenizer(captions, add_special_tokens=False, verbose=False).input_ids]


def caption_capacity(tokenizer: Any, max_caption_tokens: int) -> int:
    """How many caption tokens fit: 75 per chunk of the text encoder's 77-token window."""
    return CAPTION_CHUNKS[max_caption_tokens] * (tokenizer.model_max_length - 2)


def caption_tokens_fitting(tokenizer: Any, captions: list[str]) -> tuple[int, int]:
    """(the longest caption's tokens, the smallest --max-caption-tokens keeping every caption whole; 225 at most)."""
    longest = max(caption_token_counts(tokenizer, captions), default=0)
    fitting = [tokens for tokens in CAPTION_CHUNKS if caption_capacity(tokenizer, tokens) >= longest]
    return longest, min(fitting) if fitting else max(CAPTION_CHUNKS)


def caption_tokens_measure(model: str, dataset: Path) -> tuple[int, int]:
    """`caption_tokens_fitting` for a prepared dataset's captions, with only the model's tokenizer loaded."""
    from transformers import CLIPTokenizer

    try:
        tokenizer = CLIPTokenizer.from_pretrained(model, subfolder="tokenizer")
    except (OSError, ValueError) as error:
        raise UserInputError(f"cannot read the tokenizer of {model!r} ({str(error)[:200]}).") from None
    captions = [
        caption
        for name in ("train.txt", "validation.txt")
        for caption in read_dataset(dataset, name).captions
    ]
    return caption_tokens_fitting(tokenizer, captions)


@torch.no_grad()
def cached_text_states(
    cache: DiskCache,
    components: Components,
    captions: list[str],
    device: torch.device,
    max_caption_tokens: int = 77,
    batch_size: int = 16,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The frozen text encoders' states for each caption and (SDXL) the pooled embedding, from the cache
    where present."""
    text_parts = sorted(key for key in components.fingerprint if key != "vae")
    keys = [
        cache_key(
            "text",
            *(components.fingerprint[part] for part in text_parts),
            max_caption_tokens,
            components.text_encoder.dtype,  # bf16 and fp32 encodings differ: never serve one for the other
            caption,
        )
        for caption in captions
    ]
    found = {key: value for key in keys if (value := cache.get(key)) is not None}
    found_pooled = {key: value for key in keys if (value := cache.get(f"{key}-pooled")) is not None}
    missing = [index for index, key in enumerate(keys) if key not in found]
    for start in range(0, len(missing), batch_size):
        chunk = missing[start : start + batch_size]
        ids = components.family.tokenize(
            components.tokenizers, [captions[index] for index in chunk], max_caption_tokens
        )
        states, pooled = components.text_model(ids.to(device))
        for row, index in enumerate(chunk):
            cache.put(keys[index], states[row].float())
            found[keys[index]] = states[row].float().cpu()
            if pooled is not None:
                cache.put(f"{keys[index]}-pooled", pooled[row].float())
                found_pooled[keys[index]] = pooled[row].float().cpu()
    pooled_rows = [found_pooled[key] for key in keys if key in found_pooled]
    return (
        torch.stack([found[key] for key in keys]),
        torch.stack(pooled_rows) if len(pooled_rows) == len(keys) else None,
    )


def image_sizes(dataset: Path, split: Split, resolution: int) -> list[tuple[int, int, int, int]]:
    """Each image's source (height, width) and its crop's (top, left) at `resolution`, from the manifest;
    a manifest written before crops were recorded gives the centre crop the preparation made."""
    import json

    manifest = json.loads((Path(dataset) / "manifest.json").read_text(encoding="utf-8"))
    prepared = manifest.get("settings", {}).get("resolution") or resolution
    pairs = {pair["image"]: pair for pair in manifest.get("pairs", [])}
    sizes = []
    for image in split.images:
        pair = pairs.get(image, {})
        width, height = pair.get("source_size") or (prepared, prepared)
        if "crop_top_left" in pair:
            top, left = pair["crop_top_left"]
        else:
            scale = prepared / min(width, height)
            top = (max(prepared, round(height * scale)) - prepared) // 2
            left = (max(prepared, round(width * scale)) - prepared) // 2
        factor = resolution / prepared
        sizes.append((height, width, round(top * factor), round(left * factor)))
    return sizes
