"""diffusers_to_kohya: the key mapping A1111 and ComfyUI users rely on, with alpha per module."""

import torch

from trainer.engine.lora_formats import diffusers_to_kohya


def test_diffusers_and_peft_keys_become_kohya_keys_with_alpha():
    down, up = torch.randn(4, 32), torch.randn(32, 4)
    module = "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_out.0"
    kohya_name = "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_out_0"
    for down_key, up_key in [
        (f"unet.{module}.lora.down.weight", f"unet.{module}.lora.up.weight"),  # diffusers file
        (f"unet.{module}.lora_A.weight", f"unet.{module}.lora_B.weight"),
        (f"{module}.lora_A.default.weight", f"{module}.lora_B.default.weight"),  # PEFT, bare UNet
    ]:
        kohya = diffusers_to_kohya({down_key: down, up_key: up}, alpha=8)
        assert set(kohya) == {
            f"{kohya_name}.lora_down.weight",
            f"{kohya_name}.lora_up.weight",
            f"{kohya_name}.alpha",
        }
        assert torch.equal(kohya[f"{kohya_name}.lora_down.weight"], down)
        assert torch.equal(kohya[f"{kohya_name}.lora_up.weight"], up)
        assert kohya[f"{kohya_name}.alpha"].item() == 8.0


def test_text_encoder_keys_get_the_te_prefix():
    kohya = diffusers_to_kohya(
        {"text_encoder.encoder.layers.0.self_attn.q_proj.lora_A.weight": torch.ones(2, 8)}, 2
    )
    assert "lora_te_encoder_layers_0_self_attn_q_proj.lora_down.weight" in kohya
