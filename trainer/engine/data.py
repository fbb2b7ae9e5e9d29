"""The base model's parts and the prepared dataset as tensors, with VAE latents and text-encoder outputs
cached on disk (keyed by model, dtype, resolution or caption length, and content) so later runs reuse them."""

from __future__ import annotations

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

PREDICTION_TYPES = ("epsilon", "v_prediction")  # what the UNet predicts: the noise, or the velocity


@dataclass
class Components:
    """The parts of a Stable Diffusion 1.x pipeline that training touches."""

    tokenizer: Any
    text_encoder: Any
    vae: Any
    unet: Any
    noise_scheduler: Any
    fingerprint: dict[str, str]  # per part, a hash that changes when its weights change


def check_model_exists(model: str) -> None:
    """Refuse a --model that reads as a local path (not an `owner/name` hub id) and does not exist."""
    path = Path(model).expanduser()
    if not path.exists() and (model.startswith((".", "/", "~")) or model.count("/") != 1):
        raise UserInputError(
            f"--model {model}: the folder does not exist; give a local diffusers folder (with "
            "model_index.json) or a hub id such as stable-diffusion-v1-5/stable-diffusion-v1-5."
        )


def load_components(
    model: str, dtype: torch.dtype = torch.float32, text_encoder_dtype: torch.dtype = torch.float32
) -> Components:
    """Load tokenizer, text encoder, VAE, UNet (in `dtype`) and DDPM scheduler from a diffusers folder or hub id."""
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    check_model_exists(model)
    try:
        parts = Components(
            tokenizer=CLIPTokenizer.from_pretrained(model, subfolder="tokenizer"),
            text_encoder=CLIPTextModel.from_pretrained(
                model, subfolder="text_encoder", dtype=text_encoder_dtype
            ),
            vae=AutoencoderKL.from_pretrained(model, subfolder="vae", torch_dtype=dtype),
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
    parts.fingerprint = {part: fingerprint(model, part) for part in ("vae", "text_encoder", "tokenizer")}
    return parts


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


CAPTION_CHUNKS = {77: 1, 150: 2, 225: 3}  # --max-caption-tokens -> 75-token chunks


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


def tokenize(tokenizer: Any, captions: list[str], max_caption_tokens: int = 77) -> torch.Tensor:
    """Token ids [n, chunks x window]: one window padded as the pipeline does at inference, or (for longer
    captions) 75-token chunks each framed by BOS and EOS and kept whole: A1111's layout without its comma
    backtrack; kohya's v1 form drops the inner BOS/EOS states after encoding (docs/training.md)."""
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


@torch.no_grad()
def cached_text_states(
    cache: DiskCache,
    components: Components,
    captions: list[str],
    device: torch.device,
    max_caption_tokens: int = 77,
    batch_size: int = 16,
) -> torch.Tensor:
    """The frozen text encoder's last hidden states for each caption, from the cache where present."""
    encoder = components.text_encoder
    keys = [
        cache_key(
            "text",
            components.fingerprint["text_encoder"],
            components.fingerprint["tokenizer"],
            max_caption_tokens,
            encoder.dtype,  # bf16 and fp32 encodings differ: never serve one for the other
            caption,
        )
        for caption in captions
    ]
    found = {key: value for key in keys if (value := cache.get(key)) is not None}
    missing = [index for index, key in enumerate(keys) if key not in found]
    for start in range(0, len(missing), batch_size):
        chunk = missing[start : start + batch_size]
        ids = tokenize(components.tokenizer, [captions[index] for index in chunk], max_caption_tokens)
        window = components.tokenizer.model_max_length
        states = encode_text(encoder, ids.to(device), window).float().cpu()
        for index, state in zip(chunk, states, strict=True):
            cache.put(keys[index], state)
            found[keys[index]] = state
    return torch.stack([found[key] for key in keys])
