"""Save, then prove the load: every adapter file written is loaded back the way users load it and compared.

One proof pipeline serves a whole run. Given the run's components it is built around the frozen base tensors
training already holds (a second module tree over the same storage, no second copy of the weights) and a
fresh tokenizer; each file is loaded into it with the stock diffusers loaders and unloaded again.

A LoRA file goes through stock `StableDiffusionPipeline.load_lora_weights` (diffusers and kohya files alike);
every trained module must come back wrapped, with the trained update `scaling * B @ A`. A kohya file is also
parsed directly. A Textual-Inversion file goes through `load_textual_inversion` and must give back the
learned vectors. Any difference is an error naming the file, never a warning.
"""

from __future__ import annotations

import copy
import functools
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch.overrides import TorchFunctionMode

from peftlab.errors import UserInputError, error_line

PROOF_ADAPTER = "peftlab_proof"
# Float32 files compared with float32 weights; kohya's loader folds alpha into the factors (rounding only).
TOLERANCE = {"rtol": 1e-4, "atol": 1e-6}


def lora_delta(down: torch.Tensor, up: torch.Tensor, scaling: float) -> torch.Tensor:
    """The weight update a LoRA module adds, `scaling * up @ down`, for linear and 1x1-conv layers alike."""
    # On the CPU in float32: a GPU's TF32 matmul would round the two sides of a comparison differently.
    return scaling * (up.detach().float().cpu().flatten(1) @ down.detach().float().cpu().flatten(1))


def trained_lora_deltas(unet: Any, scaling: float) -> dict[str, torch.Tensor]:
    """Each LoRA-wrapped UNet module's update, by module path (`down_blocks.0....attn1.to_q`)."""
    from peft.utils import get_peft_model_state_dict

    return adapter_lora_deltas(get_peft_model_state_dict(unet), scaling)


def adapter_lora_deltas(state: dict[str, torch.Tensor], scaling: float) -> dict[str, torch.Tensor]:
    """Each module's update from PEFT's adapter state dict (`name.lora_A.weight`, `name.lora_B.weight`)."""
    modules = sorted(key.removesuffix(".lora_A.weight") for key in state if key.endswith(".lora_A.weight"))
    return {
        name: lora_delta(state[f"{name}.lora_A.weight"], state[f"{name}.lora_B.weight"], scaling)
        for name in modules
    }


def compare_deltas(path: Path, expected: dict[str, torch.Tensor], loaded: dict[str, torch.Tensor]) -> None:
    """Refuse a file whose loaded modules miss a trained one or carry other values."""
    missing = sorted(set(expected) - set(loaded))
    if missing:
        raise UserInputError(
            f"{path} did not load back: {len(missing)} of {len(expected)} trained LoRA modules are missing "
            f"(e.g. {missing[0]}); the file is incomplete."
        )
    for name, delta in expected.items():
        if loaded[name].shape != delta.shape or not torch.allclose(loaded[name], delta, **TOLERANCE):
            difference = (
                (loaded[name] - delta).abs().max().item() if loaded[name].shape == delta.shape else "shape"
            )
            raise UserInputError(
                f"{path} did not load back: module {name} differs from the trained weights (max |difference| "
                f"{difference}); the file is corrupt."
            )


def kohya_deltas(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The update of each module of a kohya file, by diffusers-style module path of its UNet name."""
    deltas = {}
    for key in state:
        if key.startswith("lora_unet_") and key.endswith(".lora_down.weight"):
            name = key.removesuffix(".lora_down.weight")
            down, up = state[key], state[f"{name}.lora_up.weight"]
            alpha = float(state[f"{name}.alpha"]) if f"{name}.alpha" in state else down.shape[0]
            deltas[name] = lora_delta(down, up, alpha / down.shape[0])
    return deltas


# In-place fills a loader uses to start a tensor it then overwrites with loaded values.
RANDOM_FILLS = frozenset(
    {
        torch.Tensor.normal_,
        torch.Tensor.uniform_,
        torch.nn.init.normal_,
        torch.nn.init.uniform_,
        torch.nn.init.trunc_normal_,
        torch.nn.init.kaiming_normal_,
        torch.nn.init.kaiming_uniform_,
        torch.nn.init.xavier_normal_,
        torch.nn.init.xavier_uniform_,
        torch.nn.init.orthogonal_,
    }
)
# Every other way to draw from a global generator.
RANDOM_DRAWS = frozenset(
    {
        torch.rand,
        torch.rand_like,
        torch.randn,
        torch.randn_like,
        torch.randint,
        torch.randint_like,
        torch.randperm,
        torch.normal,
        torch.bernoulli,
        torch.multinomial,
        torch.poisson,
        torch.Tensor.random_,
        torch.Tensor.bernoulli_,
        torch.Tensor.exponential_,
        torch.Tensor.geometric_,
        torch.Tensor.cauchy_,
        torch.Tensor.log_normal_,
        torch.nn.functional.dropout,
    }
)


class ProofDrewRandomNumbers(RuntimeError):
    """A proof drew from a global random generator (a bug: the training's draws would shift)."""


class DrawsNothing(TorchFunctionMode):
    """On this thread only: tensors started at random are filled with NaN instead, any other draw is refused.

    A tensor a loader starts at random is overwritten by the values it loads, so NaN changes no proven value
    and a value left unwritten fails the comparison.
    """

    def __torch_function__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        kwargs = kwargs or {}
        if func in RANDOM_FILLS:
            # nn.init passes the tensor by keyword when it hands itself to a mode.
            tensor = args[0] if args else kwargs["tensor"]
            with torch.no_grad():
                return tensor.fill_(math.nan)
        if func in RANDOM_DRAWS:
            raise ProofDrewRandomNumbers(
                f"the load proof called {getattr(func, '__name__', func)}, a draw from the generator training uses"
            )
        return func(*args, **kwargs)


def keeps_training_rng(check: Callable[..., Any]) -> Callable[..., Any]:
    """Run a proof step without touching the global generators the training draws from.

    Building the pipeline and the stock loaders start new tensors at random (`load_textual_inversion` and
    its unload build whole token tables), and only the main process proves: each draw would make the
    processes' draws drift apart, and a run's weights depend on how often it saved. `fork_rng` cannot keep
    a proof that runs on a background save's thread away from the draws of the epoch training meanwhile:
    both threads share the one global generator, and fork_rng restores at its end the state it saw at its
    start, over the training's draws. So the proof draws nothing at all (`DrawsNothing`, on its thread).
    """

    @functools.wraps(check)
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        with DrawsNothing():
            return check(*args, **kwargs)

    return wrapped


def refuse_meta_parameters(pipe: Any, path: Path) -> None:
    """Refuse a load that left a parameter without values (on torch's `meta` device): stock diffusers does
    that, silently, for a LoRA module whose file lacks one matrix, and the model then computes NaN."""
    for component in ("unet", "text_encoder"):
        for name, parameter in getattr(pipe, component).named_parameters():
            if parameter.device.type == "meta":
                raise UserInputError(
                    f"LoRA {path} left {component}.{name} without values after loading (the file lacks it); "
                    "the file is incomplete."
                )


def base_tensors(module: torch.nn.Module, rows: int | None = None) -> dict[str, torch.Tensor]:
    """`module`'s frozen tensors by the names of the plain model: PEFT's `base_layer` and the trained LoRA
    matrices and Textual-Inversion rows left out, the embedding table cut to `rows` (views, never copies)."""
    state = {}
    for name, tensor in module.state_dict().items():
        if ".lora_" in name or name.endswith("token_embedding.rows"):
            continue
        name = name.replace(".base_layer.", ".").replace("token_embedding.table.", "token_embedding.")
        state[name] = (
            tensor[:rows] if rows is not None and name.endswith("token_embedding.weight") else tensor
        )
    return state


def shared_twin(module: torch.nn.Module, build: Callable[[], torch.nn.Module], **cut: int) -> torch.nn.Module:
    """A module built by `build` (on the meta device: nothing allocated) whose tensors are `module`'s frozen
    ones, shared: loading an adapter into the twin wraps the twin's layers and leaves `module` as it is."""
    with torch.device("meta"):
        twin = build()
    twin.load_state_dict(base_tensors(module, cut.get("rows")), assign=True, strict=True)
    # Non-persistent buffers (CLIP's position ids) are not in a state dict: share them by name.
    sources = dict(module.named_buffers())
    for name, buffer in list(twin.named_buffers()):
        if buffer.device.type == "meta":
            owner, _, leaf = name.rpartition(".")
            twin.get_submodule(owner).register_buffer(leaf, sources[name], persistent=False)
    return twin.requires_grad_(False).eval()


class LoadProof:
    """The run's proof pipeline, built on first use: around the training components' frozen tensors when
    given float32 ones, else loaded from `model` on the CPU in float32."""

    def __init__(self, model: str, components: Any = None) -> None:
        self.model = model
        self.components = components
        self._pipe: Any = None

    @property
    @keeps_training_rng
    def pipe(self) -> Any:
        if self._pipe is None:
            from diffusers import StableDiffusionPipeline

            # PEFT casts a loaded adapter to its base layer's dtype: over a half-precision UNet the file's float32
            # values would come back rounded, so such a run's proof loads its own float32 copy once instead.
            if self.components is None or self.components.unet.dtype != torch.float32:
                self._pipe = StableDiffusionPipeline.from_pretrained(
                    self.model, safety_checker=None, requires_safety_checker=False, dtype=torch.float32
                )
            else:
                self._pipe = self.shared_pipeline()
            # The rows `load_textual_inversion` adds are overwritten by the file's vectors at once: skip
            # transformers' mean-and-covariance start for them (seconds per load on SD's 49,408-token table).
            encoder = self._pipe.text_encoder
            encoder.resize_token_embeddings = functools.partial(
                encoder.resize_token_embeddings, mean_resizing=False
            )
        return self._pipe

    def shared_pipeline(self) -> Any:
        """A pipeline over the training components' frozen tensors, with the tokenizer as the model ships it."""
        from diffusers import StableDiffusionPipeline, UNet2DConditionModel
        from transformers import CLIPTextModel, CLIPTokenizer

        parts = self.components
        # Textual Inversion added its tokens to the training tokenizer; the proof loads them as a user would.
        tokenizer = CLIPTokenizer.from_pretrained(self.model, subfolder="tokenizer")
        text_config = copy.deepcopy(parts.text_encoder.config)
        text_config.vocab_size = len(tokenizer)
        return StableDiffusionPipeline(
            vae=parts.vae,  # never touched by a load
            text_encoder=shared_twin(
                parts.text_encoder, lambda: CLIPTextModel(text_config), rows=len(tokenizer)
            ),
            tokenizer=tokenizer,
            unet=shared_twin(parts.unet, lambda: UNet2DConditionModel.from_config(parts.unet.config)),
            scheduler=parts.noise_scheduler,
            safety_checker=None,
            feature_extractor=None,
            requires_safety_checker=False,
        )

    @keeps_training_rng
    def lora(self, path: Path, expected: dict[str, torch.Tensor]) -> None:
        """Load the LoRA file at `path` with `load_lora_weights` and compare each wrapped module's update."""
        from peft.tuners.tuners_utils import BaseTunerLayer

        pipe = self.pipe
        try:
            pipe.load_lora_weights(path.parent, weight_name=path.name, adapter_name=PROOF_ADAPTER)
        except (ValueError, KeyError, RuntimeError) as error:
            raise UserInputError(f"{path} did not load back into the pipeline: {error_line(error)}") from None
        try:
            refuse_meta_parameters(pipe, path)
            loaded = {
                name: lora_delta(
                    module.lora_A[PROOF_ADAPTER].weight,
                    module.lora_B[PROOF_ADAPTER].weight,
                    module.scaling[PROOF_ADAPTER],
                )
                for name, module in pipe.unet.named_modules()
                if isinstance(module, BaseTunerLayer) and PROOF_ADAPTER in getattr(module, "lora_A", {})
            }
        finally:
            pipe.delete_adapters(PROOF_ADAPTER)
        compare_deltas(path, expected, loaded)

    @keeps_training_rng
    def kohya(self, path: Path, expected: dict[str, torch.Tensor]) -> None:
        """Parse the kohya file (every trained module, right values), then load it as users do."""
        from safetensors.torch import load_file

        from trainer.engine.lora_formats import kohya_module_name

        compare_deltas(
            path,
            {kohya_module_name(name): delta for name, delta in expected.items()},
            kohya_deltas(load_file(path)),
        )
        self.lora(path, expected)

    @keeps_training_rng
    def textual_inversion(self, path: Path, token: str, learned: torch.Tensor) -> None:
        """Load the embedding at `path` with `load_textual_inversion` and compare the token's rows."""
        pipe = self.pipe
        try:
            pipe.load_textual_inversion(str(path), token=token)
        except (ValueError, KeyError, RuntimeError) as error:
            raise UserInputError(f"{path} did not load back into the pipeline: {error_line(error)}") from None
        try:
            names = [token] + [f"{token}_{index}" for index in range(1, len(learned))]
            ids = pipe.tokenizer.convert_tokens_to_ids(names)
            rows = pipe.text_encoder.get_input_embeddings().weight[ids].detach().float().cpu()
        finally:
            pipe.unload_textual_inversion(names)
        if rows.shape != learned.shape or not torch.equal(rows, learned.float()):
            raise UserInputError(
                f"{path} did not load back: the vectors of {token!r} differ from the learned ones; the file is corrupt."
            )
