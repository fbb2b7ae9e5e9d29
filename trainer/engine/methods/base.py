"""The `Method` interface the loop trains through, and the shared setup of every PEFT adapter on the UNet.

Everything else (data, noise, loss, validation, checkpoints) is the shared loop in `loop.py`.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import torch

from peftlab.errors import UserInputError
from trainer.engine.config import AdapterTrainingConfig, TrainingConfig
from trainer.engine.data import Components
from trainer.engine.export import base_model_fingerprint
from trainer.engine.families import detect_family
from trainer.engine.proof import LoadProof


class Method:
    """The interface the loop trains through."""

    config_class: type[TrainingConfig]  # the dataclass of the method's options
    text_encoder_trains: bool  # False: the text encoder's outputs are fixed and can be cached
    config: TrainingConfig
    components: Components | None = None  # set by setup; the proof pipeline shares their frozen tensors

    def __init__(self, config: TrainingConfig) -> None:
        self.config = config

    def setup(self, components: Components) -> None:
        """Freeze the base model and add the trainable parameters."""
        raise NotImplementedError

    def trained_module(self, components: Components) -> torch.nn.Module:
        """The module holding the trainable parameters (the one Accelerate wraps for multi-GPU)."""
        raise NotImplementedError

    def caption(self, caption: str) -> str:
        """The training caption for a dataset caption."""
        return caption

    def trainable_state(self, module: torch.nn.Module) -> dict[str, torch.Tensor]:
        """The trainable tensors, by name (what a checkpoint needs besides the optimizer)."""
        return {name: p.detach().clone() for name, p in module.named_parameters() if p.requires_grad}

    def load_trainable_state(self, module: torch.nn.Module, state: dict[str, torch.Tensor]) -> None:
        """Put checkpointed trainable tensors back."""
        parameters = dict(module.named_parameters())
        for name, value in state.items():
            check_checkpoint_shape(name, value, parameters.get(name))
        with torch.no_grad():
            for name, value in state.items():
                parameters[name].copy_(value)

    def save(self, module: torch.nn.Module, folder: Path) -> list[str]:
        """Write the artifacts to `folder`, prove each loads back as trained; return their file names."""
        raise NotImplementedError

    @functools.cached_property
    def base_model(self) -> dict[str, str]:
        """The base model's name, family and weights fingerprint, recorded in every output file and run.json."""
        return base_model_fingerprint(self.config.model) | {
            "base_model_family": detect_family(self.config.model).name
        }

    @functools.cached_property
    def proof(self) -> LoadProof:
        """The run's one proof pipeline, over the set-up components' frozen tensors, that every file is loaded into."""
        return LoadProof(self.config.model, self.components)


def check_checkpoint_shape(name: str, saved: torch.Tensor, current: torch.Tensor | None) -> None:
    """Refuse a checkpointed tensor that the model lacks or that has another shape (another rank, say)."""
    if current is None or saved.shape != current.shape:
        shape = "no such parameter" if current is None else f"shape {tuple(current.shape)}"
        raise UserInputError(
            f"the checkpoint's {name} has shape {tuple(saved.shape)} but this run's has {shape}; it was "
            "written with another --rank, --target-modules or --num-vectors: resume with those, or train into "
            "a new --output."
        )


class AdapterMethod(Method):
    """A PEFT adapter on the UNet's `--target-modules`, built from PEFT's own config class; the text encoder,
    VAE and the UNet's own weights stay frozen."""

    text_encoder_trains = False
    config: AdapterTrainingConfig

    def peft_config(self) -> Any:
        """The PEFT config of the adapter (LoraConfig, LoHaConfig, ...)."""
        raise NotImplementedError

    def setup(self, components: Components) -> None:
        self.components = components
        components.unet.requires_grad_(False)
        # PEFT adapts the modules whose path ends in a listed name and says nothing of a name matching none.
        paths = [path for path, _ in components.unet.named_modules()]
        for target in self.config.target_module_list:
            if not any(path == target or path.endswith(f".{target}") for path in paths):
                raise UserInputError(
                    f"--target-modules names {target!r}, which matches no module of the UNet; use names such as "
                    "to_q,to_k,to_v,to_out.0 (also proj_in, proj_out, ff.net.0.proj, ff.net.2)."
                )
        try:
            components.unet.add_adapter(self.peft_config())
        except ValueError as error:
            raise UserInputError(
                f"--target-modules {self.config.target_modules!r} does not fit {self.config.method} on the UNet "
                f"({error}); use names such as to_q,to_k,to_v,to_out.0."
            ) from None
        # The adapter trains in float32 even when the frozen base runs in half precision.
        for parameter in components.unet.parameters():
            if parameter.requires_grad:
                parameter.data = parameter.data.float()

    def trained_module(self, components: Components) -> torch.nn.Module:
        return components.unet
