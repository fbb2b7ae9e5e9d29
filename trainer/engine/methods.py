"""What differs between LoRA and Textual Inversion: which parameters train, how captions read, what is saved.

Everything else (data, noise, loss, validation, checkpoints) is the shared loop in `loop.py`.
"""

from __future__ import annotations

import functools
import re
from pathlib import Path
from typing import Any

import torch

from peftlab.errors import UserInputError
from peftlab.files import write_atomic
from trainer.engine.config import LoraTrainingConfig, TiTrainingConfig, TrainingConfig
from trainer.engine.data import Components
from trainer.engine.export import add_safetensors_metadata, base_model_fingerprint
from trainer.engine.proof import LoadProof

LORA_WEIGHTS = "pytorch_lora_weights.safetensors"
KOHYA_WEIGHTS = "lora_kohya.safetensors"
TI_WEIGHTS = "learned_embeds.safetensors"


class Method:
    """The interface the loop trains through."""

    text_encoder_trains: bool  # False: the text encoder's outputs are fixed and can be cached
    config: TrainingConfig
    components: Components | None = None  # set by setup; the proof pipeline shares their frozen tensors

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
        return self.write(self.saved_state(module), folder)

    def saved_state(self, module: torch.nn.Module) -> dict[str, torch.Tensor]:
        """The tensors the artifacts hold, copied to the CPU now (the next step changes the module's)."""
        raise NotImplementedError

    def write(self, state: dict[str, torch.Tensor], folder: Path) -> list[str]:
        """Write `saved_state`'s tensors to `folder` as the artifacts, prove each loads back; their file names.

        Reads nothing of the training's module: it may run on a background thread while the next epoch trains.
        """
        raise NotImplementedError

    @functools.cached_property
    def base_model(self) -> dict[str, str]:
        """The base model's name and weights fingerprint, recorded in every output file and run.json."""
        return base_model_fingerprint(self.config.model)

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


class LoraMethod(Method):
    """LoRA adapters on the UNet's attention projections; text encoder, VAE and UNet stay frozen."""

    text_encoder_trains = False

    def __init__(self, config: LoraTrainingConfig) -> None:
        self.config = config

    def peft_config(self) -> Any:
        from peft import LoraConfig

        return LoraConfig(
            r=self.config.rank,
            lora_alpha=self.config.alpha,
            lora_dropout=self.config.dropout,
            init_lora_weights="gaussian",
            target_modules=self.config.target_module_list,
        )

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
                f"--target-modules {self.config.target_modules!r} does not match the UNet ({error}); "
                "use names such as to_q,to_k,to_v,to_out.0."
            ) from None
        # The adapter trains in float32 even when the frozen base runs in half precision.
        for parameter in components.unet.parameters():
            if parameter.requires_grad:
                parameter.data = parameter.data.float()

    def trained_module(self, components: Components) -> torch.nn.Module:
        return components.unet

    def saved_state(self, module: torch.nn.Module) -> dict[str, torch.Tensor]:
        from peft.utils import get_peft_model_state_dict

        # PEFT's key names for every module: diffusers' converter renames only the attention projections,
        # and a file of mixed names loads only the modules named like its first key.
        return {
            key: value.detach().to("cpu", torch.float32, copy=True).contiguous()
            for key, value in get_peft_model_state_dict(module).items()
        }

    def write(self, state: dict[str, torch.Tensor], folder: Path) -> list[str]:
        from diffusers import StableDiffusionPipeline
        from safetensors.torch import load_file, save_file

        from trainer.engine.lora_formats import diffusers_to_kohya, kohya_metadata
        from trainer.engine.proof import adapter_lora_deltas

        # The adapter metadata keeps lora_alpha in the file; without it loaders assume alpha == rank.
        StableDiffusionPipeline.save_lora_weights(
            folder,
            unet_lora_layers=state,
            unet_lora_adapter_metadata=self.peft_config().to_dict()
            | {"base_model_name_or_path": self.config.model},
            safe_serialization=True,
        )
        add_safetensors_metadata(folder / LORA_WEIGHTS, self.base_model)
        kohya = diffusers_to_kohya(load_file(folder / LORA_WEIGHTS), self.config.alpha)
        header = kohya_metadata(self.config, self.base_model)
        write_atomic(folder / KOHYA_WEIGHTS, lambda path: save_file(kohya, path, metadata=header))
        expected = adapter_lora_deltas(state, self.config.alpha / self.config.rank)
        self.proof.lora(folder / LORA_WEIGHTS, expected)
        self.proof.kohya(folder / KOHYA_WEIGHTS, expected)
        return [LORA_WEIGHTS, KOHYA_WEIGHTS]


def a1111_file_name(token: str) -> str:
    """The A1111 embedding file name; A1111 triggers an embedding by its file name."""
    stem = re.sub(r"[^A-Za-z0-9_-]+", "", token) or "embedding"
    return f"{stem}.safetensors"


class SplicedEmbedding(torch.nn.Module):
    """A frozen embedding table whose rows `token_ids` are read from a small trainable tensor instead.

    Only `rows` trains, so the backward pass, the gradient clip and the optimizer see the new tokens'
    vectors and nothing of the frozen table; `weight` is the full table with the rows spliced in.
    """

    def __init__(self, table: torch.nn.Embedding, token_ids: list[int]) -> None:
        super().__init__()
        self.table = table.requires_grad_(False)
        ids = torch.tensor(token_ids, dtype=torch.long, device=table.weight.device)
        self.rows = torch.nn.Parameter(table.weight.detach()[ids].clone())
        self.register_buffer("token_ids", ids, persistent=False)
        # Per vocabulary id, its index in `rows`, or -1 for a frozen row.
        slots = torch.full((table.num_embeddings,), -1, dtype=torch.long, device=ids.device)
        slots[ids] = torch.arange(len(ids), device=ids.device)
        self.register_buffer("slots", slots, persistent=False)

    @property
    def weight(self) -> torch.Tensor:
        """The whole table as it would be with the trained rows written in."""
        return self.table.weight.index_put((self.token_ids,), self.rows)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        slots = self.slots[ids]
        frozen = self.table(ids)
        # torch.where, not boolean indexing: no host synchronisation on the GPU.
        return torch.where((slots >= 0)[..., None], self.rows[slots.clamp(min=0)], frozen)


class TextualInversionMethod(Method):
    """New token rows in the text encoder's embedding table; every other weight stays as it was."""

    text_encoder_trains = True

    def __init__(self, config: TiTrainingConfig) -> None:
        self.config = config
        self.token_ids: list[int] = []

    def setup(self, components: Components) -> None:
        self.components = components
        tokenizer, text_encoder = components.tokenizer, components.text_encoder
        tokens = self.config.placeholder_tokens
        # A token that already reads as one vocabulary entry ("tower" is `tower</w>`) would change every prompt using it.
        existing = [
            token for token in tokens if token in tokenizer.get_vocab() or len(tokenizer.tokenize(token)) == 1
        ]
        if existing or tokenizer.add_tokens(tokens) != len(tokens):
            raise UserInputError(
                f"the placeholder token {(existing or tokens)[0]!r} is already in the vocabulary; choose a new one "
                'such as "<my-style>".'
            )
        initializer = tokenizer.encode(self.config.initializer_token, add_special_tokens=False)
        if len(initializer) != 1:
            raise UserInputError(
                f"--initializer-token {self.config.initializer_token!r} is {len(initializer)} tokens; "
                "give a word that is exactly one token, such as style."
            )
        self.token_ids = tokenizer.convert_tokens_to_ids(tokens)
        text_encoder.resize_token_embeddings(len(tokenizer), mean_resizing=False)
        embeddings = text_encoder.get_input_embeddings()
        with torch.no_grad():
            embeddings.weight[self.token_ids] = embeddings.weight[initializer[0]].clone()
        text_encoder.requires_grad_(False)
        text_encoder.set_input_embeddings(SplicedEmbedding(embeddings, self.token_ids))

    def trained_module(self, components: Components) -> torch.nn.Module:
        return components.text_encoder

    def caption(self, caption: str) -> str:
        return self.config.caption_template.format(
            token=" ".join(self.config.placeholder_tokens), caption=caption
        )

    def trainable_state(self, module: torch.nn.Module) -> dict[str, torch.Tensor]:
        return {"embeddings": module.get_input_embeddings().weight.detach().clone()}

    def load_trainable_state(self, module: torch.nn.Module, state: dict[str, torch.Tensor]) -> None:
        embeddings = module.get_input_embeddings()
        check_checkpoint_shape("embeddings", state["embeddings"], embeddings.weight)
        with torch.no_grad():
            embeddings.rows.copy_(state["embeddings"][self.token_ids])

    def learned(self, module: torch.nn.Module) -> torch.Tensor:
        """The new rows, [num_vectors, width]."""
        return module.get_input_embeddings().weight[self.token_ids].detach().float().cpu().contiguous()

    def saved_state(self, module: torch.nn.Module) -> dict[str, torch.Tensor]:
        return {"learned": self.learned(module)}  # gathered from the spliced table: a copy

    def write(self, state: dict[str, torch.Tensor], folder: Path) -> list[str]:
        from safetensors.torch import save_file

        learned = state["learned"]
        token = self.config.placeholder_token
        # The initializer travels with the file: generate's effect check renders it as the reference.
        metadata = self.base_model | {
            "placeholder_token": token,
            "initializer_token": self.config.initializer_token,
        }
        a1111 = a1111_file_name(token)
        for name, key in ((TI_WEIGHTS, token), (a1111, "emb_params")):
            write_atomic(
                folder / name, lambda path, key=key: save_file({key: learned}, path, metadata=metadata)
            )
            self.proof.textual_inversion(folder / name, token, learned)
        return [TI_WEIGHTS, a1111]


def make_method(config: TrainingConfig) -> Method:
    """The method object for a config."""
    if isinstance(config, LoraTrainingConfig):
        return LoraMethod(config)
    if isinstance(config, TiTrainingConfig):
        return TextualInversionMethod(config)
    raise UserInputError(f"no training method for {type(config).__name__}.")
