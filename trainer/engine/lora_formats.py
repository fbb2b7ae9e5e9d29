"""LoRA file formats: diffusers' `pytorch_lora_weights.safetensors` keys to kohya's (A1111, ComfyUI)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import torch

from trainer.engine.families import SD15, Family

# The names diffusers, PEFT and kohya give the two LoRA matrices: down (A, rank x in) and up (B, out x rank).
DOWN_UP = re.compile(
    r"^(?P<module>.+?)\.(?:lora\.down|lora_A|lora_down|lora_linear_layer\.down)(?:\.default)?\.weight$|"
    r"^(?P<module_up>.+?)\.(?:lora\.up|lora_B|lora_up|lora_linear_layer\.up)(?:\.default)?\.weight$"
)
PREFIXES = {"unet.": "lora_unet_", "text_encoder.": "lora_te_"}


def kohya_module_name(module: str, family: Family = SD15) -> str:
    """`unet.down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q` -> `lora_unet_down_blocks_0_..._to_q`
    (SD 1.x), or the original UNet's `lora_unet_input_blocks_4_1_...` (SDXL, as kohya's sd-scripts name it)."""
    for prefix, kohya_prefix in PREFIXES.items():
        if module.startswith(prefix):
            if prefix == "unet.":
                return family.kohya_unet_name(module[len(prefix) :])
            return kohya_prefix + module[len(prefix) :].replace(".", "_")
    return family.kohya_unet_name(module)  # PEFT keys of a bare UNet carry no prefix


def diffusers_to_kohya(
    state_dict: dict[str, torch.Tensor], alpha: float, family: Family = SD15
) -> dict[str, torch.Tensor]:
    """kohya keys (`<module>.lora_down.weight`, `.lora_up.weight`, `.alpha`) for a diffusers or PEFT LoRA."""
    converted: dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        match = DOWN_UP.match(key)
        if match is None:
            raise ValueError(f"not a LoRA weight key: {key!r}")
        module, kind = (match["module"], "lora_down") if match["module"] else (match["module_up"], "lora_up")
        name = kohya_module_name(module, family)
        converted[f"{name}.{kind}.weight"] = value.contiguous()
        # kohya scales by alpha / rank, so alpha travels with each module.
        converted[f"{name}.alpha"] = torch.tensor(float(alpha), dtype=value.dtype)
    return converted


def kohya_metadata(config: Any, base_model: dict[str, str], family: Family = SD15) -> dict[str, str]:
    """The header A1111, ComfyUI and kohya's tools read (`ss_*`), plus the base model's fingerprint."""
    return base_model | {
        "ss_network_module": "networks.lora",
        "ss_network_dim": str(config.rank),
        "ss_network_alpha": str(config.alpha),
        "ss_base_model_version": family.kohya_version,
        "ss_sd_model_name": Path(config.model).name or config.model,
        "ss_v2": "False",
    }
