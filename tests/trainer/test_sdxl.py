"""SDXL training on the tiny SDXL-shaped model: its shape, the crop it is told, the kohya names, and every
file proven again here through stock diffusers SDXL loading (as a user loads them)."""

import io
import json
import re

import pytest
import torch
from PIL import Image
from safetensors import safe_open
from safetensors.torch import load_file

from trainer.engine.data import image_sizes, read_dataset
from trainer.engine.dataset import PrepareConfig, prepare_dataset
from trainer.engine.families import SD15, SDXL, detect_family
from trainer.engine.methods import KOHYA_WEIGHTS, LORA_WEIGHTS

TOKEN = "<ghiblivis-xl>"


def test_tiny_sdxl_model_is_an_sdxl_pipeline(tiny_sdxl_dir, tiny_model_dir):
    from diffusers import StableDiffusionXLPipeline

    assert detect_family(str(tiny_sdxl_dir)) is SDXL and detect_family(str(tiny_model_dir)) is SD15
    pipe = StableDiffusionXLPipeline.from_pretrained(tiny_sdxl_dir)
    assert type(pipe.text_encoder_2).__name__ == "CLIPTextModelWithProjection"
    widths = [
        encoder.get_input_embeddings().weight.shape[1] for encoder in (pipe.text_encoder, pipe.text_encoder_2)
    ]
    assert widths == [32, 64]
    config = pipe.unet.config
    assert config.addition_embed_type == "text_time" and config.cross_attention_dim == 96
    # Six size-and-crop ids of addition_time_embed_dim each, and the pooled embedding.
    assert config.projection_class_embeddings_input_dim == 6 * config.addition_time_embed_dim + 64
    assert pipe.vae.config.force_upcast and pipe.tokenizer_2.pad_token == "!"


def test_make_tiny_model_family_sdxl_builds_the_same_files_offline(tmp_path):
    from django.core.management import call_command

    for name in ("a", "b"):
        call_command("make_tiny_model", str(tmp_path / name), "--family", "sdxl", stdout=io.StringIO())
    index = json.loads((tmp_path / "a" / "model_index.json").read_text())
    assert index["_class_name"] == "StableDiffusionXLPipeline" and "text_encoder_2" in index
    weights = sorted(path.relative_to(tmp_path / "a") for path in (tmp_path / "a").rglob("*.safetensors"))
    assert len(weights) == 4  # two text encoders, UNet, VAE
    for path in weights:
        assert (tmp_path / "a" / path).read_bytes() == (tmp_path / "b" / path).read_bytes()


def test_kohya_sdxl_names_follow_the_original_unet():
    """kohya's sd-scripts name SDXL modules by the original UNet's blocks: three per level (two blocks and a
    sampler) in, one middle block with attention at 1, three per level out."""
    attention = "attentions.0.transformer_blocks.0.attn1.to_q"
    assert SDXL.kohya_unet_name(f"down_blocks.1.{attention}") == (
        "lora_unet_input_blocks_4_1_transformer_blocks_0_attn1_to_q"
    )
    assert SDXL.kohya_unet_name("down_blocks.2.attentions.1.proj_in") == "lora_unet_input_blocks_8_1_proj_in"
    assert SDXL.kohya_unet_name("mid_block.attentions.0.transformer_blocks.3.attn2.to_k") == (
        "lora_unet_middle_block_1_transformer_blocks_3_attn2_to_k"
    )
    assert SDXL.kohya_unet_name("up_blocks.0.attentions.2.transformer_blocks.0.ff.net.2") == (
        "lora_unet_output_blocks_2_1_transformer_blocks_0_ff_net_2"
    )
    # A resnet's layers by the original UNet's names too (in_layers.2 is conv1, ...), middle resnets at 0 and 2.
    assert SDXL.kohya_unet_name("down_blocks.0.resnets.1.conv1") == "lora_unet_input_blocks_2_0_in_layers_2"
    assert SDXL.kohya_unet_name("up_blocks.1.resnets.2.conv_shortcut") == (
        "lora_unet_output_blocks_5_0_skip_connection"
    )
    assert (
        SDXL.kohya_unet_name("mid_block.resnets.1.time_emb_proj") == "lora_unet_middle_block_2_emb_layers_1"
    )
    assert SD15.kohya_unet_name(f"down_blocks.1.{attention}") == (
        "lora_unet_down_blocks_1_attentions_0_transformer_blocks_0_attn1_to_q"
    )


def test_the_crop_is_recorded_per_image_and_scaled_to_the_training_size(tmp_path):
    source = tmp_path / "source"
    source.mkdir()
    for name, size in (("wide", (96, 64)), ("tall", (64, 128)), ("square", (64, 64))):
        Image.new("RGB", size, (200, 100, 50)).save(source / f"{name}.png")
        (source / f"{name}.txt").write_text(f"a {name} tower\n")
    prepare_dataset(source, tmp_path / "data", PrepareConfig(resolution=64, min_size=32, val_fraction=0.34))
    pairs = {
        pair["image"]: pair for pair in json.loads((tmp_path / "data" / "manifest.json").read_text())["pairs"]
    }
    assert pairs["wide.png"]["crop_top_left"] == [0, 16] and pairs["tall.png"]["crop_top_left"] == [32, 0]
    images = (
        read_dataset(tmp_path / "data", "train.txt").images
        + read_dataset(tmp_path / "data", "validation.txt").images
    )
    split = type("Split", (), {"images": images})
    expected = {"wide.png": (64, 96, 0, 32), "tall.png": (128, 64, 64, 0), "square.png": (64, 64, 0, 0)}
    # Trained at 128 px, twice the prepared size: the crop doubles; the source size stays.
    assert dict(zip(images, image_sizes(tmp_path / "data", split, 128), strict=True)) == expected
    conditions = SDXL.image_conditions([expected["wide.png"]], 128)
    assert (
        conditions.tolist() == [[64.0, 96.0, 0.0, 32.0, 128.0, 128.0]]
        and SD15.image_conditions([], 128) is None
    )


@pytest.mark.slow
def test_sdxl_lora_files_load_through_stock_sdxl_pipeline(tiny_sdxl_dir, tiny_sdxl_runs):
    from diffusers import StableDiffusionXLPipeline
    from peft.tuners.tuners_utils import BaseTunerLayer

    run = tiny_sdxl_runs["lora"]
    record = json.loads((run / "run.json").read_text())
    assert record["base_model"]["base_model_family"] == "sdxl"
    kohya = load_file(run / KOHYA_WEIGHTS)
    assert any(key.startswith("lora_unet_input_blocks_4_1_transformer_blocks_0_attn1_to_q") for key in kohya)
    assert not any("down_blocks" in key for key in kohya)
    with safe_open(run / KOHYA_WEIGHTS, framework="pt") as handle:
        assert handle.metadata()["ss_base_model_version"] == "sdxl_base_v1-0"
    trained = {key.split(".lora")[0] for key in load_file(run / LORA_WEIGHTS)}
    for name in (LORA_WEIGHTS, KOHYA_WEIGHTS):
        pipe = StableDiffusionXLPipeline.from_pretrained(tiny_sdxl_dir, add_watermarker=False)
        pipe.load_lora_weights(run, weight_name=name)
        wrapped = [module for module in pipe.unet.modules() if isinstance(module, BaseTunerLayer)]
        assert len(wrapped) == len(trained) > 0, name


@pytest.mark.slow
def test_sdxl_ti_files_load_into_both_encoders_through_stock_sdxl_pipeline(tiny_sdxl_dir, tiny_sdxl_runs):
    from diffusers import StableDiffusionXLPipeline

    run = tiny_sdxl_runs["ti"]
    layout = load_file(run / "ghiblivis-xl.safetensors")
    assert {key: tuple(value.shape) for key, value in layout.items()} == {
        "clip_l": (1, 32),
        "clip_g": (1, 64),
    }
    first, second = (
        load_file(run / "learned_embeds.safetensors"),
        load_file(run / "learned_embeds_2.safetensors"),
    )
    assert torch.equal(first[TOKEN], layout["clip_l"]) and torch.equal(second[TOKEN], layout["clip_g"])
    pipe = StableDiffusionXLPipeline.from_pretrained(tiny_sdxl_dir, add_watermarker=False)
    pipe.load_textual_inversion(run / "learned_embeds.safetensors", token=TOKEN)
    pipe.load_textual_inversion(
        run / "learned_embeds_2.safetensors",
        token=TOKEN,
        text_encoder=pipe.text_encoder_2,
        tokenizer=pipe.tokenizer_2,
    )
    for tokenizer, encoder, key in (
        (pipe.tokenizer, pipe.text_encoder, "clip_l"),
        (pipe.tokenizer_2, pipe.text_encoder_2, "clip_g"),
    ):
        row = encoder.get_input_embeddings().weight[tokenizer.convert_tokens_to_ids(TOKEN)]
        assert torch.equal(row, layout[key][0])
    # The trained vectors moved away from the initializer's in both encoders.
    style = pipe.tokenizer.convert_tokens_to_ids("style</w>")
    assert not torch.equal(pipe.text_encoder.get_input_embeddings().weight[style], layout["clip_l"][0])


def test_the_loop_names_no_family():
    """Families are registered objects behind one interface: the loop's code names none of them."""
    from pathlib import Path

    from trainer.engine import loop
    from trainer.engine.families import FAMILIES

    source = Path(loop.__file__).read_text(encoding="utf-8")
    for family in FAMILIES.values():
        for name in (family.name, family.label, family.pipeline_class, *family.embedding_keys):
            assert not re.search(rf"\b{re.escape(name)}\b", source), name
    assert "text_encoder_2" not in source and "added_cond_kwargs" not in source
