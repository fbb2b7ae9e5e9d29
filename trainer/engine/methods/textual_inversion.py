"""Textual Inversion: new token rows in the text encoder's embedding table, saved for diffusers and A1111."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import torch

from peftlab.errors import UserInputError
from peftlab.files import write_atomic
from trainer.engine.config import TiTrainingConfig
from trainer.engine.data import Components
from trainer.engine.methods.base import Method, check_checkpoint_shape

TI_WEIGHTS = "learned_embeds.safetensors"


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

    config_class = TiTrainingConfig
    config: TiTrainingConfig
    text_encoder_trains = True

    def __init__(self, config: TiTrainingConfig) -> None:
        super().__init__(config)
        self.encoder_token_ids: list[list[int]] = []  # per text encoder, the new tokens' ids

    @property
    def token_ids(self) -> list[int]:
        """The new tokens' ids in the first tokenizer."""
        return self.encoder_token_ids[0]

    def setup(self, components: Components) -> None:
        """Add the tokens to every tokenizer and a trainable row per token to every text encoder (SDXL: one
        vector per token for each of its two encoders, as its embeddings carry)."""
        self.components = components
        for tokenizer, text_encoder in zip(components.tokenizers, components.text_encoders, strict=True):
            self.encoder_token_ids.append(self.add_tokens(tokenizer, text_encoder))

    def add_tokens(self, tokenizer: Any, text_encoder: Any) -> list[int]:
        """Add the placeholder tokens to one tokenizer and encoder, their rows starting as the initializer's."""
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
        token_ids = tokenizer.convert_tokens_to_ids(tokens)
        text_encoder.resize_token_embeddings(len(tokenizer), mean_resizing=False)
        embeddings = text_encoder.get_input_embeddings()
        with torch.no_grad():
            embeddings.weight[token_ids] = embeddings.weight[initializer[0]].clone()
        text_encoder.requires_grad_(False)
        text_encoder.set_input_embeddings(SplicedEmbedding(embeddings, token_ids))
        return token_ids

    def trained_module(self, components: Components) -> torch.nn.Module:
        return components.text_model

    def caption(self, caption: str) -> str:
        return self.config.caption_template.format(
            token=" ".join(self.config.placeholder_tokens), caption=caption
        )

    @staticmethod
    def state_key(index: int) -> str:
        """The checkpoint key of text encoder `index`'s table: embeddings, embeddings_2."""
        return "embeddings" if index == 0 else f"embeddings_{index + 1}"

    def trainable_state(self, module: torch.nn.Module) -> dict[str, torch.Tensor]:
        return {
            self.state_key(index): encoder.get_input_embeddings().weight.detach().clone()
            for index, encoder in enumerate(module.encoders)
        }

    def load_trainable_state(self, module: torch.nn.Module, state: dict[str, torch.Tensor]) -> None:
        for index, encoder in enumerate(module.encoders):
            embeddings, key = encoder.get_input_embeddings(), self.state_key(index)
            check_checkpoint_shape(key, state[key], embeddings.weight)
            with torch.no_grad():
                embeddings.rows.copy_(state[key][self.encoder_token_ids[index]])

    def learned(self, encoder: torch.nn.Module, index: int = 0) -> torch.Tensor:
        """Text encoder `index`'s new rows, [num_vectors, width]."""
        rows = self.encoder_token_ids[index]
        return encoder.get_input_embeddings().weight[rows].detach().float().cpu().contiguous()

    def save(self, module: torch.nn.Module, folder: Path) -> list[str]:
        """A diffusers `{token: vectors}` file per text encoder (`learned_embeds.safetensors`, and for SDXL
        `learned_embeds_2.safetensors`, as diffusers' SDXL example writes them) and the A1111/ComfyUI file
        (`emb_params`; SDXL: `clip_l` and `clip_g`), each proven by loading it back."""
        from safetensors.torch import save_file

        family = self.components.family
        learned = [self.learned(encoder, index) for index, encoder in enumerate(module.encoders)]
        token = self.config.placeholder_token
        # The initializer travels with the file: generate's effect check renders it as the reference.
        metadata = self.base_model | {
            "placeholder_token": token,
            "initializer_token": self.config.initializer_token,
        }
        for index, name in enumerate(family.embedding_files):
            vectors = learned[index]
            write_atomic(
                folder / name,
                lambda path, vectors=vectors: save_file({token: vectors}, path, metadata=metadata),
            )
            self.proof.textual_inversion(folder / name, token, vectors, encoder=index)
        a1111 = a1111_file_name(token)
        layout = dict(zip(family.embedding_keys, learned, strict=True))
        write_atomic(folder / a1111, lambda path: save_file(layout, path, metadata=metadata))
        self.proof.embedding_layout(folder / a1111, token, layout)
        return [*family.embedding_files, a1111]
