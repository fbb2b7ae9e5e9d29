"""LyCORIS/kohya single-file formats of LoHa and LoKr (what ComfyUI and A1111 load), written from PEFT's tensors
and read back by the LyCORIS formulas, independently of PEFT.

Keys per module: the module's kohya name (`lora_unet_<module path, dots as underscores>` on SD 1.x; on SDXL the
original UNet's `lora_unet_input_blocks_4_1_...`, the one mapping kohya LoRA files use too) + `.hada_w1_a`, `hada_w1_b`, `hada_w2_a`,
`hada_w2_b` (LoHa) or `lokr_w1` | `lokr_w1_a` + `lokr_w1_b`, and `lokr_w2` | `lokr_w2_a` + `lokr_w2_b` (LoKr),
and `alpha`. The loaders' scale is alpha / rank, where LoKr's rank is that of a decomposed factor: a LoKr module
with no decomposed factor is applied unscaled.
"""

from __future__ import annotations

from typing import Any

import torch

from trainer.engine.families import SD15, Family
from trainer.engine.lora_formats import kohya_metadata, kohya_module_name

LOHA_PARTS = ("hada_w1_a", "hada_w1_b", "hada_w2_a", "hada_w2_b")
LOKR_PARTS = ("lokr_w1", "lokr_w1_a", "lokr_w1_b", "lokr_w2", "lokr_w2_a", "lokr_w2_b")


def peft_to_lycoris(
    state: dict[str, torch.Tensor], alpha: float, rank: int, family: Family = SD15
) -> dict[str, torch.Tensor]:
    """LyCORIS keys for PEFT LoHa or LoKr tensors (`<kohya module name>.hada_w1_a`, ...) of a `family` UNet,
    PEFT's alpha / rank kept."""
    modules: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in state.items():
        module, _, part = key.rpartition(".")
        if part not in LOHA_PARTS + LOKR_PARTS:
            # Tucker-decomposed convolutions (hada_t1, lokr_t2) are never trained here: refuse, do not drop.
            raise ValueError(f"not a LoHa or LoKr weight of a linear or 1x1 layer: {key!r}")
        modules.setdefault(kohya_module_name(module, family), {})[part] = (
            value.detach().float().cpu().contiguous()
        )
    converted: dict[str, torch.Tensor] = {}
    for name, parts in modules.items():
        if "lokr_w1" in parts and "lokr_w2" in parts:
            # No decomposed factor, so no rank for the loaders to divide alpha by: PEFT's scale goes into w1.
            parts["lokr_w1"] = parts["lokr_w1"] * (alpha / rank)
        else:
            converted[f"{name}.alpha"] = torch.tensor(float(alpha))
        converted.update({f"{name}.{part}": value for part, value in parts.items()})
    return converted


def lycoris_deltas(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Each module's weight change rebuilt from a LyCORIS LoHa or LoKr file, as [out, in x kernel] float32.

    LoHa: (w1_a @ w1_b) * (w2_a @ w2_b) * alpha / rank. LoKr: kron(w1, w2) * scale, each factor whole or a
    product of two, scale alpha / rank of a decomposed factor (1 when neither is decomposed).
    """
    tensors = {key: value.float().cpu() for key, value in state.items()}
    names = sorted({key.rpartition(".")[0] for key in tensors})
    deltas = {}
    for name in names:
        part = {
            key.rpartition(".")[2]: value for key, value in tensors.items() if key.rpartition(".")[0] == name
        }
        alpha = float(part["alpha"]) if "alpha" in part else None
        if "hada_w1_a" in part:
            rank = part["hada_w1_b"].shape[0]
            delta = (part["hada_w1_a"] @ part["hada_w1_b"]) * (part["hada_w2_a"] @ part["hada_w2_b"])
            delta = delta * (alpha / rank if alpha is not None else 1.0)
        elif any(key.startswith("lokr_") for key in part):
            rank = None
            factors = []
            for side in ("w1", "w2"):
                if f"lokr_{side}" in part:
                    factors.append(part[f"lokr_{side}"])
                else:
                    rank = part[f"lokr_{side}_b"].shape[0]
                    factors.append(part[f"lokr_{side}_a"] @ part[f"lokr_{side}_b"])
            w1, w2 = factors
            if w2.dim() == 4:  # a whole convolution factor: w1 gains the kernel's two axes
                w1 = w1[:, :, None, None]
            scale = alpha / rank if alpha is not None and rank is not None else 1.0
            delta = torch.kron(w1, w2) * scale
        else:
            continue
        deltas[name] = delta.flatten(1)
    return deltas


def lycoris_metadata(config: Any, base_model: dict[str, str], family: Family = SD15) -> dict[str, str]:
    """kohya's header (`ss_base_model_version` of `family`) with LyCORIS's network module and algorithm, plus the
    base model's fingerprint."""
    return kohya_metadata(config, base_model, family) | {
        "ss_network_module": "lycoris.kohya",
        "ss_network_args": f'{{"algo": "{config.method}"}}',
    }
