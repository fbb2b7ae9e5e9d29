"""Save, then prove the load: every adapter file written is loaded back the way users load it and compared.

One proof pipeline serves a whole run. Given the run's components it is built around the frozen base tensors
training already holds (a second module tree over the same storage, no second copy of the weights) and a
fresh tokenizer; each file is loaded into it with the stock diffusers loaders and unloaded again.

A LoRA or DoRA file goes through the stock pipeline's `load_lora_weights` (`StableDiffusionPipeline` or
`StableDiffusionXLPipeline`, by the model's family; diffusers and kohya files alike); every trained module
must come back wrapped, with the trained update `scaling * B @ A` (and DoRA's magnitude vector). A kohya
file is also parsed directly. A PEFT adapter folder (LoHa, LoKr, OFT) goes through
`PeftModel.from_pretrained` into the pipeline's UNet, and each module's weight change (OFT: its rotation)
must equal the trained one; a LyCORIS file is rebuilt independently of PEFT by the LyCORIS formulas and
compared the same way. A Textual-Inversion file goes through `load_textual_inversion` (into each text encoder it holds vectors
for) and must give back the learned vectors. Any difference is an error naming the file, never a warning.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import math
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
from torch.overrides import TorchFunctionMode

from peftlab.errors import UserInputError, error_line

PROOF_ADAPTER = "peftlab_proof"
# The name parts of PEFT's trained tensors: LoRA and DoRA, LoHa, LoKr, OFT.
ADAPTER_PARTS = (".lora_", ".hada_", ".lokr_", ".oft_R.")
MAGNITUDE = ".lora_magnitude_vector"  # DoRA's trained magnitude, one per output row, in PEFT's state dict
# Float32 files compared with float32 weights; kohya's loader folds alpha into the factors (rounding only).
TOLERANCE = {"rtol": 1e-4, "atol": 1e-6}


def lora_delta(down: torch.Tensor, up: torch.Tensor, scaling: float) -> torch.Tensor:
    """The weight update a LoRA module adds, `scaling * up @ down`, for linear and 1x1-conv layers alike."""
    # On the CPU in float32: a GPU's TF32 matmul would round the two sides of a comparison differently.
    return scaling * (up.detach().float().cpu().flatten(1) @ down.detach().float().cpu().flatten(1))


def trained_lora_deltas(unet: Any, scaling: float) -> dict[str, torch.Tensor]:
    """Each LoRA-wrapped UNet module's update, by module path (`down_blocks.0....attn1.to_q`), and DoRA's
    magnitude vector of each module, by `<module path>.lora_magnitude_vector`."""
    from peft.utils import get_peft_model_state_dict

    state = get_peft_model_state_dict(unet)
    modules = sorted(key.removesuffix(".lora_A.weight") for key in state if key.endswith(".lora_A.weight"))
    magnitudes = {
        key: value.detach().float().cpu() for key, value in state.items() if key.endswith(MAGNITUDE)
    }
    return {
        name: lora_delta(state[f"{name}.lora_A.weight"], state[f"{name}.lora_B.weight"], scaling)
        for name in modules
    } | magnitudes


@contextlib.contextmanager
def exact_float32() -> Iterator[None]:
    """Float32 matmuls in float32 on CUDA too (not TF32), so PEFT's and the file's products round alike."""
    saved = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32 = saved


def adapter_layers(unet: Any, adapter: str) -> dict[str, Any]:
    """The UNet's PEFT layers that hold `adapter`, by module path."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    return {
        name: module
        for name, module in unet.named_modules()
        if isinstance(module, BaseTunerLayer)
        and any(adapter in getattr(module, part, {}) for part in module.adapter_layer_names)
    }


def weight_changes(unet: Any, adapter: str = "default") -> dict[str, torch.Tensor]:
    """PEFT's own weight change of each module adapted by `adapter`, as [out, in x kernel] float32:
    `get_delta_weight` for the additive methods (LoHa, LoKr); for OFT, whose merge is W R^T, the rotation's
    change R - I, which fixes W (R^T - I) without depending on the frozen W's precision (a bf16 run's proof
    loads a float32 base)."""
    from peft.tuners.oft.layer import OFTLayer

    changes = {}
    with torch.no_grad(), exact_float32():
        for name, layer in sorted(adapter_layers(unet, adapter).items()):
            delta = layer.get_delta_weight(adapter).float().cpu()
            if isinstance(layer, OFTLayer):
                delta = delta - torch.eye(len(delta))
            changes[name] = delta.flatten(1)
    return changes


def compare_deltas(
    path: Path, expected: dict[str, torch.Tensor], loaded: dict[str, torch.Tensor], kind: str = "LoRA"
) -> None:
    """Refuse a file whose loaded modules miss a trained one or carry other values."""
    missing = sorted(set(expected) - set(loaded))
    if missing:
        raise UserInputError(
            f"{path} did not load back: {len(missing)} of {len(expected)} trained {kind} modules are missing "
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
    for component in ("unet", "text_encoder", "text_encoder_2"):
        if getattr(pipe, component, None) is None:
            continue
        for name, parameter in getattr(pipe, component).named_parameters():
            if parameter.device.type == "meta":
                raise UserInputError(
                    f"LoRA {path} left {component}.{name} without values after loading (the file lacks it); "
                    "the file is incomplete."
                )


def base_tensors(module: torch.nn.Module, rows: int | None = None) -> dict[str, torch.Tensor]:
    """`module`'s frozen tensors by the names of the plain model: PEFT's `base_layer` and the trained adapter
    tensors and Textual-Inversion rows left out, the embedding table cut to `rows` (views, never copies)."""
    state = {}
    for name, tensor in module.state_dict().items():
        if any(part in name for part in ADAPTER_PARTS) or name.endswith("token_embedding.rows"):
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
        from trainer.engine.families import detect_family

        self.model = model
        self.components = components
        self.family = detect_family(model) if components is None else components.family
        self._pipe: Any = None

    @property
    @keeps_training_rng
    def pipe(self) -> Any:
        if self._pipe is None:
            # PEFT casts a loaded adapter to its base layer's dtype: over a half-precision UNet the file's float32
            # values would come back rounded, so such a run's proof loads its own float32 copy once instead.
            if self.components is None or self.components.unet.dtype != torch.float32:
                no_checker = {"safety_checker": None, "requires_safety_checker": False}
                self._pipe = self.family.pipeline().from_pretrained(
                    self.model,
                    dtype=torch.float32,
                    **(no_checker if self.family.name == "sd15" else {}),
                    **self.family.pipeline_kwargs(),
                )
            else:
                self._pipe = self.shared_pipeline()
            # The rows `load_textual_inversion` adds are overwritten by the file's vectors at once: skip
            # transformers' mean-and-covariance start for them (seconds per load on SD's 49,408-token table).
            for part in self.family.text_parts:
                encoder = getattr(self._pipe, part.encoder)
                encoder.resize_token_embeddings = functools.partial(
                    encoder.resize_token_embeddings, mean_resizing=False
                )
        return self._pipe

    def shared_pipeline(self) -> Any:
        """A pipeline over the training components' frozen tensors, with the tokenizers as the model ships them."""
        from diffusers import UNet2DConditionModel
        from transformers import CLIPTokenizer

        parts = self.components
        text: dict[str, Any] = {}
        for part, encoder in zip(self.family.text_parts, parts.text_encoders, strict=True):
            # Textual Inversion added its tokens to the training tokenizers; the proof loads them as a user would.
            tokenizer = CLIPTokenizer.from_pretrained(self.model, subfolder=part.tokenizer)
            text_config = copy.deepcopy(encoder.config)
            text_config.vocab_size = len(tokenizer)
            text[part.tokenizer] = tokenizer
            text[part.encoder] = shared_twin(
                encoder,
                lambda encoder=encoder, text_config=text_config: type(encoder)(text_config),
                rows=len(tokenizer),
            )
        extra = (
            {"safety_checker": None, "feature_extractor": None, "requires_safety_checker": False}
            if self.family.name == "sd15"
            else self.family.pipeline_kwargs()
        )
        return self.family.pipeline()(
            vae=parts.vae,  # never touched by a load
            unet=shared_twin(parts.unet, lambda: UNet2DConditionModel.from_config(parts.unet.config)),
            scheduler=parts.noise_scheduler,
            **text,
            **extra,
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
            loaded = {}
            for name, module in pipe.unet.named_modules():
                if isinstance(module, BaseTunerLayer) and PROOF_ADAPTER in getattr(module, "lora_A", {}):
                    loaded[name] = lora_delta(
                        module.lora_A[PROOF_ADAPTER].weight,
                        module.lora_B[PROOF_ADAPTER].weight,
                        module.scaling[PROOF_ADAPTER],
                    )
                    if PROOF_ADAPTER in module.lora_magnitude_vector:
                        magnitude = module.lora_magnitude_vector[PROOF_ADAPTER].weight
                        loaded[name + MAGNITUDE] = magnitude.detach().float().cpu()
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
            {kohya_module_name(name, self.family): delta for name, delta in expected.items()},
            kohya_deltas(load_file(path)),
        )
        self.lora(path, expected)

    @keeps_training_rng
    def textual_inversion(self, path: Path, token: str, learned: torch.Tensor, encoder: int = 0) -> None:
        """Load the embedding file at `path` with `load_textual_inversion` into text encoder `encoder` (with its
        tokenizer) and compare the token's rows."""
        self.load_embedding(path, str(path), token, learned, encoder)

    @keeps_training_rng
    def embedding_layout(self, path: Path, token: str, layout: dict[str, torch.Tensor]) -> None:
        """Prove the A1111/ComfyUI file at `path`: one key (`emb_params`) loads as a file; several (SDXL's
        `clip_l`, `clip_g`) load tensor by tensor into their encoders, as diffusers' SDXL documentation does."""
        from safetensors.torch import load_file

        if len(layout) == 1:
            self.load_embedding(path, str(path), token, next(iter(layout.values())), 0)
            return
        state = load_file(path)
        missing = sorted(set(layout) - set(state))
        if missing:
            raise UserInputError(
                f"{path} did not load back: it lacks the key {missing[0]!r}; the file is corrupt."
            )
        for encoder, (key, learned) in enumerate(layout.items()):
            self.load_embedding(path, state[key], token, learned, encoder)

    def load_embedding(
        self, path: Path, source: Any, token: str, learned: torch.Tensor, encoder: int
    ) -> None:
        """Load `source` (a file path or a tensor read from `path`) as `token` into text encoder `encoder`,
        compare its rows with `learned`, and unload it."""
        pipe = self.pipe
        part = self.family.text_parts[encoder]
        tokenizer, text_encoder = getattr(pipe, part.tokenizer), getattr(pipe, part.encoder)
        try:
            pipe.load_textual_inversion(source, token=token, tokenizer=tokenizer, text_encoder=text_encoder)
        except (ValueError, KeyError, RuntimeError) as error:
            raise UserInputError(f"{path} did not load back into the pipeline: {error_line(error)}") from None
        try:
            names = [token] + [f"{token}_{index}" for index in range(1, len(learned))]
            ids = tokenizer.convert_tokens_to_ids(names)
            rows = text_encoder.get_input_embeddings().weight[ids].detach().float().cpu()
        finally:
            pipe.unload_textual_inversion(names, tokenizer=tokenizer, text_encoder=text_encoder)
        if rows.shape != learned.shape or not torch.equal(rows, learned.float()):
            raise UserInputError(
                f"{path} did not load back: the vectors of {token!r} differ from the learned ones ({part.encoder}); "
                "the file is corrupt."
            )

    @keeps_training_rng
    def peft_folder(self, folder: Path, expected: dict[str, torch.Tensor]) -> None:
        """Load the PEFT adapter folder with `PeftModel.from_pretrained` (the config class from its
        adapter_config.json) into the pipeline's UNet and compare each module's weight change."""
        from peft import PeftModel

        unet = self.pipe.unet
        try:
            model = PeftModel.from_pretrained(unet, folder, adapter_name=PROOF_ADAPTER)
        except (ValueError, KeyError, RuntimeError, OSError, TypeError) as error:
            raise UserInputError(f"{folder} did not load back through PEFT: {error_line(error)}") from None
        try:
            loaded = weight_changes(unet, PROOF_ADAPTER)
        finally:
            model.unload()  # the UNet's own layers back in place, the adapter gone
        compare_deltas(folder / "adapter_model.safetensors", expected, loaded, "adapter")

    def lycoris(self, path: Path, expected: dict[str, torch.Tensor]) -> None:
        """Rebuild each module's weight change from the LyCORIS file (LoHa, LoKr) by the LyCORIS formulas and
        compare it with the trained model's own (PEFT's merged change), module by module, under the kohya names
        of the model's family (SDXL: the original UNet's `input_blocks_...`)."""
        from safetensors.torch import load_file

        from trainer.engine.lora_formats import kohya_module_name
        from trainer.engine.lycoris_formats import lycoris_deltas

        try:
            loaded = lycoris_deltas(load_file(path))
        except (KeyError, RuntimeError) as error:
            raise UserInputError(f"{path} did not load back: {error_line(error)}") from None
        expected = {kohya_module_name(name, self.family): delta for name, delta in expected.items()}
        compare_deltas(path, expected, loaded, "adapter")
