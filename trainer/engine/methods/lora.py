"""LoRA and DoRA: PEFT's LoraConfig (DoRA is `use_dora=True`), saved as diffusers' LoRA file (and kohya's)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from peftlab.files import write_atomic
from trainer.engine.config import DoraTrainingConfig, LoraTrainingConfig
from trainer.engine.export import add_safetensors_metadata
from trainer.engine.methods.base import AdapterMethod

LORA_WEIGHTS = "pytorch_lora_weights.safetensors"
KOHYA_WEIGHTS = "lora_kohya.safetensors"


class LoraMethod(AdapterMethod):
    """LoRA adapters on the UNet's attention projections; text encoder, VAE and UNet stay frozen."""

    config_class = LoraTrainingConfig
    config: LoraTrainingConfig

    def peft_config(self) -> Any:
        from peft import LoraConfig

        return LoraConfig(
            r=self.config.rank,
            lora_alpha=self.config.alpha,
            lora_dropout=self.config.dropout,
            init_lora_weights="gaussian",
            target_modules=self.config.target_module_list,
            use_dora=self.config.method == "dora",
        )

    def save_diffusers(self, module: torch.nn.Module, folder: Path) -> None:
        """diffusers' `pytorch_lora_weights.safetensors`, with the LoraConfig (alpha, use_dora) in its metadata."""
        from peft.utils import get_peft_model_state_dict

        # PEFT's key names for every module: diffusers' converter renames only the attention projections,
        # and a file of mixed names loads only the modules named like its first key.
        layers = get_peft_model_state_dict(module)
        # The adapter metadata keeps lora_alpha in the file; without it loaders assume alpha == rank.
        self.components.family.pipeline().save_lora_weights(
            folder,
            unet_lora_layers={key: value.float().cpu().contiguous() for key, value in layers.items()},
            unet_lora_adapter_metadata=self.peft_config().to_dict()
            | {"base_model_name_or_path": self.config.model},
            safe_serialization=True,
        )
        add_safetensors_metadata(folder / LORA_WEIGHTS, self.base_model)

    def save(self, module: torch.nn.Module, folder: Path) -> list[str]:
        from safetensors.torch import load_file, save_file

        from trainer.engine.lora_formats import diffusers_to_kohya, kohya_metadata
        from trainer.engine.proof import trained_lora_deltas

        self.save_diffusers(module, folder)
        family = self.components.family
        kohya = diffusers_to_kohya(load_file(folder / LORA_WEIGHTS), self.config.alpha, family)
        header = kohya_metadata(self.config, self.base_model, family)
        write_atomic(folder / KOHYA_WEIGHTS, lambda path: save_file(kohya, path, metadata=header))
        expected = trained_lora_deltas(module, self.config.alpha / self.config.rank)
        self.proof.lora(folder / LORA_WEIGHTS, expected)
        self.proof.kohya(folder / KOHYA_WEIGHTS, expected)
        return [LORA_WEIGHTS, KOHYA_WEIGHTS]


class DoraMethod(LoraMethod):
    """DoRA: LoRA's low-rank direction update plus a trained magnitude per output row of each adapted layer.

    Only diffusers' file is written: stock `load_lora_weights` loads DoRA from it (the `use_dora` flag travels in
    its metadata); kohya-style DoRA files (`dora_scale`) are another convention, not written or proven here.
    """

    config_class = DoraTrainingConfig

    def save(self, module: torch.nn.Module, folder: Path) -> list[str]:
        from trainer.engine.proof import trained_lora_deltas

        self.save_diffusers(module, folder)
        self.proof.lora(
            folder / LORA_WEIGHTS, trained_lora_deltas(module, self.config.alpha / self.config.rank)
        )
        return [LORA_WEIGHTS]
