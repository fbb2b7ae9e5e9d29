"""Build a tiny Stable-Diffusion-1.x- or SDXL-shaped pipeline offline, from configs, deterministically.

Same shapes and file layout as SD 1.x (UNet with cross-attention, VAE with scale factor 8, CLIP text
encoder and BPE tokenizer, DDPM scheduler with SD's betas), small enough to train and render on a CPU.
The SDXL family adds SDXL's second text encoder (with projection, its tokenizer padding with "!"), a UNet
with `addition_embed_type="text_time"`, and a VAE that asks to be upcast from float16, saved as a
StableDiffusionXLPipeline: tiny (two UNet levels, the second encoder twice as wide) or at SDXL base 1.0's full
sizes (`shape="sdxl"`, random weights, for GPU benchmarks).
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from peftlab.errors import UserInputError
from peftlab.files import swap_folder

# Words the tiny tokenizer keeps whole, so captions, prompts and TI initializer tokens ("style") are
# one token each, as they are in the real CLIP vocabulary.
TINY_VOCABULARY_WORDS = (
    "a an the of in on at and with is are by for to from this that it its image images photo picture "
    "painting art artwork illustration drawing render style styles ghiblivis ghibli studio anime watercolor "
    "landmark landmarks building bridge tower castle temple church mosque pyramid palace city town village "
    "street river lake sea ocean waterfall falls mountain hill forest tree trees garden park sky cloud clouds "
    "sun sunset sunrise night day light golden hour rainbow aerial view close up old ancient modern big ben "
    "colosseum petra sydney opera house khyber gate clock stone red blue green white warm soft detailed "
    "beautiful scenic vibrant calm people boat road"
).split()
BOS_TOKEN = "<|startoftext|>"
EOS_TOKEN = "<|endoftext|>"


@dataclass(frozen=True)
class ModelShape:
    """Layer sizes of one pipeline shape; widths of the text encoder and image size come from the config."""

    unet_channels: tuple[int, ...]
    unet_layers_per_block: int
    vae_channels: tuple[int, int, int, int]
    vae_layers_per_block: int
    text_layers: int
    text_heads: int
    attention_head_dim: int


@dataclass(frozen=True)
class SdxlShape:
    """What an SDXL-family pipeline adds or sets differently: its UNet's levels (the first without
    cross-attention), transformer layers and heads per level, the width each size-and-crop id is embedded to,
    and the second text encoder (0 width: twice the first's)."""

    unet_channels: tuple[int, ...]
    transformer_layers: tuple[int, ...]
    attention_heads: tuple[int, ...]  # diffusers' `attention_head_dim`, which SDXL's config uses as heads
    time_width: int
    text_2_width: int
    text_2_layers: int
    text_2_heads: int
    text_2_act: str


SHAPES = {
    # Small enough to train and render on a CPU in tests.
    "tiny": ModelShape((32, 64), 1, (32, 32, 64, 64), 1, 2, 4, 8),
    # Stable Diffusion 1.5's sizes (860 M UNet parameters), with random weights: for GPU benchmarks.
    "sd15": ModelShape((320, 640, 1280, 1280), 2, (128, 256, 512, 512), 2, 12, 12, 8),
    # SDXL base 1.0's VAE and first text encoder (CLIP ViT-L: 12 layers, 12 heads, 768 wide); with SDXL_SHAPES.
    "sdxl": ModelShape((320, 640, 1280), 2, (128, 256, 512, 512), 2, 12, 12, 64),
}
SDXL_SHAPES = {
    "tiny": SdxlShape((32, 64), (1, 2), (2, 4), 8, 0, 2, 4, "quick_gelu"),
    # SDXL base 1.0's UNet (2.6 B parameters: 320/640/1280 channels, 1/2/10 transformer layers, 5/10/20 heads,
    # 2048-wide cross-attention, text_time with 256 per id and 2816 inputs) and second text encoder (OpenCLIP
    # ViT-bigG with projection: 1280 wide, 32 layers, 20 heads, gelu).
    "sdxl": SdxlShape((320, 640, 1280), (1, 2, 10), (5, 10, 20), 256, 1280, 32, 20, "gelu"),
}
FAMILY_SHAPES = {"sd15": ("tiny", "sd15"), "sdxl": ("tiny", "sdxl")}


@dataclass(frozen=True)
class TinyModelConfig:
    """What to build: the shape and sizes of the pipeline and the seed of its random weights."""

    seed: int = 0
    text_width: int = 32  # 768 gives SD-1.x's embedding width (and SDXL's first encoder's)
    image_size: int = 64  # pixels; the UNet sees image_size // 8 latents
    shape: str = "tiny"  # a key of SHAPES: tiny for either family, sd15 for sd15, sdxl for sdxl
    family: str = "sd15"  # sd15 or sdxl

    def __post_init__(self) -> None:
        if self.family not in FAMILY_SHAPES:
            raise UserInputError(f"--family must be sd15 or sdxl, got {self.family!r}.")
        if self.shape in SHAPES and self.shape not in FAMILY_SHAPES[self.family]:
            raise UserInputError(
                f"--shape {self.shape} is not a {self.family} shape; use one of "
                f"{', '.join(FAMILY_SHAPES[self.family])} with --family {self.family}."
            )
        if self.text_width < 8 or self.text_width % 4:
            raise UserInputError(
                f"--text-width must be a multiple of 4 and at least 8, got {self.text_width}."
            )
        if self.image_size < 32 or self.image_size % 32:
            raise UserInputError(
                f"--image-size must be a multiple of 32 and at least 32, got {self.image_size}."
            )
        if self.shape not in SHAPES:
            raise UserInputError(f"--shape must be one of {', '.join(SHAPES)}, got {self.shape!r}.")


@dataclass(frozen=True)
class TinyModel:
    """Where the tiny pipeline was written and what it holds."""

    path: Path
    vocab_size: int
    parameter_count: int


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP's reversible map from bytes to printable unicode symbols."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    printable += list(range(ord("®"), ord("ÿ") + 1))
    codes = printable[:]
    extra = 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            codes.append(256 + extra)
            extra += 1
    return dict(zip(printable, (chr(code) for code in codes), strict=True))


def build_bpe_files(
    words: tuple[str, ...] | list[str] = TINY_VOCABULARY_WORDS,
) -> tuple[dict[str, int], list[str]]:
    """A CLIP BPE vocabulary and merge list, learned the BPE way, in which each of `words` is one token."""
    symbols = list(bytes_to_unicode().values())
    # Each word as symbols, the last carrying CLIP's end-of-word mark.
    segmented = [list(word[:-1]) + [word[-1] + "</w>"] for word in dict.fromkeys(words)]
    merges: list[str] = []
    merged_tokens: list[str] = []
    while True:
        counts = Counter(pair for pieces in segmented for pair in zip(pieces, pieces[1:], strict=False))
        if not counts:
            break
        # The most frequent pair, ties broken by sort order, so the files are the same on every build.
        best = max(sorted(counts), key=counts.__getitem__)
        merges.append(f"{best[0]} {best[1]}")
        merged_tokens.append(best[0] + best[1])
        segmented = [merge_pair(pieces, best) for pieces in segmented]
    vocab_tokens = symbols + [symbol + "</w>" for symbol in symbols] + merged_tokens + [BOS_TOKEN, EOS_TOKEN]
    vocab = {token: index for index, token in enumerate(dict.fromkeys(vocab_tokens))}
    return vocab, merges


def merge_pair(pieces: list[str], pair: tuple[str, str]) -> list[str]:
    """`pieces` with every non-overlapping occurrence of `pair` merged, left to right."""
    merged: list[str] = []
    index = 0
    while index < len(pieces):
        if index + 1 < len(pieces) and (pieces[index], pieces[index + 1]) == pair:
            merged.append(pieces[index] + pieces[index + 1])
            index += 2
        else:
            merged.append(pieces[index])
            index += 1
    return merged


def build_tiny_model(output: Path, config: TinyModelConfig) -> TinyModel:
    """Write a tiny StableDiffusionPipeline (or StableDiffusionXLPipeline) in diffusers format to `output`
    (replacing what is there)."""
    from diffusers import DDPMScheduler, StableDiffusionPipeline, StableDiffusionXLPipeline
    from transformers import CLIPTokenizer

    output = Path(output)
    if output.exists() and not output.is_dir():
        raise UserInputError(f"{output} is a file; give a folder path for the model.")
    vocab, merges = build_bpe_files()
    output.parent.mkdir(parents=True, exist_ok=True)
    # Build beside the target and rename at the end, so a failed build never leaves half a model.
    staging = Path(tempfile.mkdtemp(prefix=".tiny-model-", dir=output.parent))
    try:
        tokenizer_dir = staging / "tokenizer-source"
        tokenizer_dir.mkdir()
        (tokenizer_dir / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
        (tokenizer_dir / "merges.txt").write_text(
            "#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8"
        )
        tokenizer = CLIPTokenizer.from_pretrained(tokenizer_dir, model_max_length=77)
        for word in ("style", "ghiblivis"):
            if len(tokenizer.tokenize(word)) != 1:
                raise RuntimeError(f"the tiny tokenizer splits {word!r}; its merge list is inconsistent")

        text_encoder = make_text_encoder(config, vocab)
        unet = make_unet(config) if config.family == "sd15" else make_sdxl_unet(config)
        vae = make_vae(config)
        scheduler = DDPMScheduler(
            num_train_timesteps=1000,
            beta_start=0.00085,
            beta_end=0.012,
            beta_schedule="scaled_linear",
            steps_offset=1,
            clip_sample=False,
            prediction_type="epsilon",
        )
        text_encoders = [text_encoder]
        if config.family == "sd15":
            pipeline = StableDiffusionPipeline(
                vae=vae,
                text_encoder=text_encoder,
                tokenizer=tokenizer,
                unet=unet,
                scheduler=scheduler,
                safety_checker=None,
                feature_extractor=None,
                requires_safety_checker=False,
            )
        else:
            # SDXL's second tokenizer pads with "!" where the first pads with its end token.
            tokenizer_2 = CLIPTokenizer.from_pretrained(tokenizer_dir, model_max_length=77, pad_token="!")
            text_encoders.append(make_text_encoder(config, vocab, second=True))
            pipeline = StableDiffusionXLPipeline(
                vae=vae,
                text_encoder=text_encoder,
                text_encoder_2=text_encoders[1],
                tokenizer=tokenizer,
                tokenizer_2=tokenizer_2,
                unet=unet,
                scheduler=scheduler,
                add_watermarker=False,
            )
        model_dir = staging / "model"
        pipeline.save_pretrained(model_dir, safe_serialization=True)
        # Keep the BPE source files beside tokenizer.json so slow and fast tokenizers both load.
        for folder in ("tokenizer", "tokenizer_2")[: len(text_encoders)]:
            for name in ("vocab.json", "merges.txt"):
                shutil.copy(tokenizer_dir / name, model_dir / folder / name)
        swap_folder(model_dir, output)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    parameter_count = sum(p.numel() for module in (unet, vae, *text_encoders) for p in module.parameters())
    return TinyModel(path=output, vocab_size=len(vocab), parameter_count=parameter_count)


def make_text_encoder(config: TinyModelConfig, vocab: dict[str, int], second: bool = False) -> Any:
    """A CLIP text encoder of the config's shape and width with seeded random weights; `second`: SDXL's
    second encoder, with a text projection: the shape's (SDXL's OpenCLIP ViT-bigG, 1280 wide) or, tiny, twice
    as wide as the first."""
    import torch
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    shape = SHAPES[config.shape]
    torch.manual_seed(config.seed + 3 * second)
    width, layers, heads, act = config.text_width, shape.text_layers, shape.text_heads, "quick_gelu"
    if second:
        xl = SDXL_SHAPES[config.shape]
        width = xl.text_2_width or 2 * config.text_width
        layers, heads, act = xl.text_2_layers, xl.text_2_heads, xl.text_2_act
    return (CLIPTextModelWithProjection if second else CLIPTextModel)(
        CLIPTextConfig(
            vocab_size=len(vocab),
            hidden_size=width,
            intermediate_size=width * 4,
            num_hidden_layers=layers,
            num_attention_heads=heads,
            max_position_embeddings=77,
            hidden_act=act,
            bos_token_id=vocab[BOS_TOKEN],
            eos_token_id=vocab[EOS_TOKEN],
            pad_token_id=vocab[EOS_TOKEN],
            projection_dim=width,
        )
    )


def make_unet(config: TinyModelConfig) -> Any:
    """An SD-1.x UNet of the config's shape (cross-attention in all blocks but the deepest) with seeded weights."""
    import torch
    from diffusers import UNet2DConditionModel

    shape = SHAPES[config.shape]
    torch.manual_seed(config.seed + 1)
    cross_attention = ("CrossAttnDownBlock2D",) * (len(shape.unet_channels) - 1)
    return UNet2DConditionModel(
        sample_size=config.image_size // 8,
        in_channels=4,
        out_channels=4,
        layers_per_block=shape.unet_layers_per_block,
        block_out_channels=shape.unet_channels,
        down_block_types=(*cross_attention, "DownBlock2D"),
        up_block_types=("UpBlock2D", *(name.replace("Down", "Up") for name in cross_attention)),
        cross_attention_dim=config.text_width,
        attention_head_dim=shape.attention_head_dim,
        norm_num_groups=32,
    )


def make_sdxl_unet(config: TinyModelConfig) -> Any:
    """An SDXL-shaped UNet: a plain first level, then cross-attention levels with the shape's transformer
    layers, two blocks per level, linear projections, and the pooled text and size-and-crop ids added to the
    time embedding."""
    import torch
    from diffusers import UNet2DConditionModel

    xl = SDXL_SHAPES[config.shape]
    torch.manual_seed(config.seed + 1)
    time_width = xl.time_width  # SDXL: 256 per id
    pooled_width = xl.text_2_width or config.text_width * 2  # encoder 2's projection
    cross_attention = ("CrossAttnDownBlock2D",) * (len(xl.unet_channels) - 1)
    return UNet2DConditionModel(
        sample_size=config.image_size // 8,
        in_channels=4,
        out_channels=4,
        layers_per_block=2,
        block_out_channels=xl.unet_channels,
        down_block_types=("DownBlock2D", *cross_attention),
        up_block_types=(*(name.replace("Down", "Up") for name in reversed(cross_attention)), "UpBlock2D"),
        transformer_layers_per_block=xl.transformer_layers,
        attention_head_dim=xl.attention_heads,
        use_linear_projection=True,
        cross_attention_dim=config.text_width + pooled_width,  # both encoders' states side by side
        addition_embed_type="text_time",
        addition_time_embed_dim=time_width,
        # Six size-and-crop ids, each embedded time_width wide, and the pooled text embedding.
        projection_class_embeddings_input_dim=6 * time_width + pooled_width,
        norm_num_groups=32,
    )


def make_vae(config: TinyModelConfig) -> Any:
    """A VAE whose four blocks downsample three times (scale factor 8, as in SD 1.x), with seeded weights."""
    import torch
    from diffusers import AutoencoderKL

    shape = SHAPES[config.shape]
    torch.manual_seed(config.seed + 2)
    return AutoencoderKL(
        sample_size=config.image_size,
        in_channels=3,
        out_channels=3,
        latent_channels=4,
        block_out_channels=shape.vae_channels,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        layers_per_block=shape.vae_layers_per_block,
        norm_num_groups=32,
        # SDXL's VAE has its own latent scale and overflows in float16 (its config asks to be upcast).
        scaling_factor=0.18215 if config.family == "sd15" else 0.13025,
        force_upcast=config.family == "sdxl",
    )
