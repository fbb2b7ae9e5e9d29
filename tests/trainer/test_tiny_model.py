"""The tiny offline model: what tests, the demo and benchmarks rely on."""

import hashlib
from io import StringIO
from pathlib import Path

import numpy as np
import pytest
import torch
from django.core.management import CommandError, call_command

from peftlab.errors import UserInputError
from trainer.engine.tiny_model import TINY_VOCABULARY_WORDS, TinyModelConfig, build_tiny_model


def folder_digest(folder: Path) -> dict[str, str]:
    return {
        str(path.relative_to(folder)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }


def test_loads_in_stock_diffusers_and_renders_64px_offline(tiny_model_dir):
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(tiny_model_dir)
    assert pipe.vae_scale_factor == 8
    assert pipe.text_encoder.get_input_embeddings().weight.shape[1] == 32
    image = pipe(
        "ghiblivis painting of big ben",
        num_inference_steps=2,
        height=64,
        width=64,
        generator=torch.Generator().manual_seed(0),
        output_type="np",
    ).images[0]
    assert image.shape == (64, 64, 3)
    assert np.isfinite(image).all() and image.std() > 0


def test_tokenizer_keeps_caption_words_whole(tiny_model_dir):
    from transformers import CLIPTokenizer

    tokenizer = CLIPTokenizer.from_pretrained(tiny_model_dir / "tokenizer")
    assert all(len(tokenizer.tokenize(word)) == 1 for word in TINY_VOCABULARY_WORDS)
    assert tokenizer.tokenize("Ghiblivis STYLE!") == ["ghiblivis</w>", "style</w>", "!</w>"]
    assert len(tokenizer("a b c").input_ids) == 5  # start and end tokens around the words


def test_build_is_deterministic_and_seeded(tmp_path):
    first = build_tiny_model(tmp_path / "a", TinyModelConfig(seed=3))
    second = build_tiny_model(tmp_path / "b", TinyModelConfig(seed=3))
    other = build_tiny_model(tmp_path / "c", TinyModelConfig(seed=4))
    assert folder_digest(first.path) == folder_digest(second.path)
    assert folder_digest(first.path) != folder_digest(other.path)


def test_command_options_set_width_and_size(tmp_path):
    from diffusers import StableDiffusionPipeline

    out = StringIO()
    call_command(
        "make_tiny_model", str(tmp_path / "wide"), "--text-width", "768", "--image-size", "128", stdout=out
    )
    assert "text width 768" in out.getvalue() and "tiny shape" in out.getvalue()
    pipe = StableDiffusionPipeline.from_pretrained(tmp_path / "wide")
    assert pipe.text_encoder.get_input_embeddings().weight.shape[1] == 768
    assert pipe.unet.config.cross_attention_dim == 768
    assert pipe.unet.config.sample_size * pipe.vae_scale_factor == 128


def test_bad_options_and_file_output_are_refused(tmp_path):
    target = tmp_path / "file"
    target.write_text("keep")
    with pytest.raises(CommandError, match="is a file"):
        call_command("make_tiny_model", str(target))
    assert target.read_text() == "keep"
    with pytest.raises(CommandError, match="--image-size must be a multiple of 32"):
        call_command("make_tiny_model", str(tmp_path / "x"), "--image-size", "50")
    assert not (tmp_path / "x").exists()


@pytest.mark.slow
def test_sd15_shape_has_stable_diffusion_15_sizes():
    from trainer.engine.tiny_model import make_unet, make_vae

    config = TinyModelConfig(shape="sd15", text_width=768, image_size=512)
    unet = make_unet(config)
    # SD 1.5's UNet has 859.5 M parameters and a VAE of 83.7 M; the benchmark's FLOP figures rely on it.
    assert round(sum(p.numel() for p in unet.parameters()) / 1e6, 1) == 859.5
    assert round(sum(p.numel() for p in make_vae(config).parameters()) / 1e6, 1) == 83.7
    assert unet.config.sample_size == 64 and unet.config.cross_attention_dim == 768


def test_sdxl_shape_has_sdxl_base_sizes():
    """Built on the meta device (no memory, no time): SDXL base 1.0's UNet of 2,567,463,684 parameters, its
    conditioning widths, and its second text encoder (OpenCLIP ViT-bigG with projection, 1280 wide)."""
    from trainer.engine.tiny_model import build_bpe_files, make_sdxl_unet, make_text_encoder

    config = TinyModelConfig(shape="sdxl", family="sdxl", text_width=768, image_size=1024)
    vocab, _ = build_bpe_files()
    with torch.device("meta"):
        unet = make_sdxl_unet(config)
        first, second = make_text_encoder(config, vocab), make_text_encoder(config, vocab, second=True)
    assert sum(p.numel() for p in unet.parameters()) == 2_567_463_684
    assert unet.config.sample_size == 128 and unet.config.cross_attention_dim == 2048
    assert unet.config.projection_class_embeddings_input_dim == 2816
    assert tuple(unet.config.transformer_layers_per_block) == (1, 2, 10)
    assert [encoder.config.hidden_size for encoder in (first, second)] == [768, 1280]
    assert second.config.num_hidden_layers == 32 and second.text_projection.out_features == 1280


@pytest.mark.parametrize(("family", "shape"), [("sd15", "sdxl"), ("sdxl", "sd15")])
def test_a_shape_of_the_other_family_is_refused(family, shape):
    with pytest.raises(UserInputError, match=f"--shape {shape} is not a {family} shape"):
        TinyModelConfig(family=family, shape=shape)
