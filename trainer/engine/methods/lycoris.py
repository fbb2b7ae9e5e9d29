"""LoHa, LoKr and OFT through PEFT's own configs, saved as a PEFT adapter folder and (LoHa, LoKr) a LyCORIS file.

The folder is what `PeftModel.save_pretrained` writes: `adapter_config.json` (the PEFT config's `to_dict`) and
`adapter_model.safetensors` (keys `base_model.model.` + PEFT's state-dict keys); generation loads it through PEFT.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from peftlab.errors import UserInputError
from peftlab.files import write_atomic
from trainer.engine.config import LohaTrainingConfig, LokrTrainingConfig, OftTrainingConfig
from trainer.engine.data import Components
from trainer.engine.methods.base import AdapterMethod

PEFT_CONFIG = "adapter_config.json"
PEFT_WEIGHTS = "adapter_model.safetensors"
PEFT_PREFIX = "base_model.model."  # what PeftModel.save_pretrained puts before the bare model's keys


class PeftFolderMethod(AdapterMethod):
    """A PEFT adapter saved the way `PeftModel.save_pretrained` does, and proven by loading it back with PEFT."""

    lycoris_file = ""  # the LyCORIS single file's name, for the methods whose math ComfyUI and A1111 share

    def save(self, module: torch.nn.Module, folder: Path) -> list[str]:
        from peft.utils import get_peft_model_state_dict
        from safetensors.torch import save_file

        from trainer.engine.proof import weight_changes

        state = {
            key: value.detach().float().cpu().contiguous()
            for key, value in get_peft_model_state_dict(module).items()
        }
        config = self.peft_config().to_dict() | {"base_model_name_or_path": self.config.model}
        # As PeftConfig.save_pretrained: sets (target_modules) as lists.
        text = json.dumps(config, indent=2, sort_keys=True, default=lambda value: sorted(value))
        write_atomic(folder / PEFT_CONFIG, lambda path: path.write_text(text + "\n", encoding="utf-8"))
        tensors = {PEFT_PREFIX + key: value for key, value in state.items()}
        header = {"format": "pt"} | self.base_model
        write_atomic(folder / PEFT_WEIGHTS, lambda path: save_file(tensors, path, metadata=header))
        expected = weight_changes(module)
        self.proof.peft_folder(folder, expected)
        if not self.lycoris_file:
            return [PEFT_CONFIG, PEFT_WEIGHTS]
        from trainer.engine.lycoris_formats import lycoris_metadata, peft_to_lycoris

        family = self.components.family
        lycoris = peft_to_lycoris(state, self.config.alpha, self.config.rank, family)
        header = lycoris_metadata(self.config, self.base_model, family)
        write_atomic(folder / self.lycoris_file, lambda path: save_file(lycoris, path, metadata=header))
        self.proof.lycoris(folder / self.lycoris_file, expected)
        return [PEFT_CONFIG, PEFT_WEIGHTS, self.lycoris_file]


class LohaMethod(PeftFolderMethod):
    """LoHa: each adapted layer's update is the Hadamard product of two rank-r products, scaled by alpha / r."""

    config_class = LohaTrainingConfig
    config: LohaTrainingConfig
    lycoris_file = "loha_lycoris.safetensors"

    def peft_config(self) -> Any:
        from peft import LoHaConfig

        return LoHaConfig(
            r=self.config.rank,
            alpha=self.config.alpha,
            rank_dropout=self.config.rank_dropout,
            module_dropout=self.config.module_dropout,
            target_modules=self.config.target_module_list,
        )


class LokrMethod(PeftFolderMethod):
    """LoKr: each adapted layer's update is the Kronecker product of a small factor and a (rank-r) larger one."""

    config_class = LokrTrainingConfig
    config: LokrTrainingConfig
    lycoris_file = "lokr_lycoris.safetensors"

    def peft_config(self) -> Any:
        from peft import LoKrConfig

        return LoKrConfig(
            r=self.config.rank,
            alpha=self.config.alpha,
            decompose_factor=self.config.factor,
            decompose_both=self.config.decompose_both,
            rank_dropout=self.config.rank_dropout,
            module_dropout=self.config.module_dropout,
            target_modules=self.config.target_module_list,
        )


class OftMethod(PeftFolderMethod):
    """OFT: each adapted layer's input is turned by a block-diagonal orthogonal matrix (PEFT's OFT v2).

    No LyCORIS file: ComfyUI's and LyCORIS's OFT turn the layer's output rows with the exact Cayley transform,
    PEFT's turns its input columns (by default with a Neumann-series Cayley), so no such file holds this update.
    """

    config_class = OftTrainingConfig
    config: OftTrainingConfig

    def peft_config(self) -> Any:
        from peft import OFTConfig

        return OFTConfig(
            r=0,
            oft_block_size=self.config.block_size,
            use_cayley_neumann=self.config.cayley_neumann,
            module_dropout=self.config.module_dropout,
            target_modules=self.config.target_module_list,
        )

    def setup(self, components: Components) -> None:
        from trainer.engine.proof import adapter_layers

        super().setup(components)
        # PEFT silently picks another block size for a layer whose input width the given one does not divide.
        for name, layer in sorted(adapter_layers(components.unet, "default").items()):
            if layer.oft_R["default"].block_size != self.config.block_size:
                raise UserInputError(
                    f"--block-size {self.config.block_size} does not divide the input width "
                    f"{layer.in_features} of {name}; choose a divisor of every adapted layer's input width."
                )
