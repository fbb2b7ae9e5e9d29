"""Load adapters of every method into a pipeline, in every format users bring, and verify them.

No Django. Methods: LoRA, DoRA, LoHa, LoKr and OFT (weight adapters: on the UNet, and for kohya files the
text encoder too) and Textual Inversion (a new token). Formats: a diffusers LoRA/DoRA file or folder and a
kohya LoRA file (both through diffusers' `load_lora_weights`), a peft adapter folder of any of those peft
types (through peft itself: diffusers' loader silently loads nothing for it), and TI embeddings as diffusers
`{token: tensor}` or A1111 `emb_params` / `string_to_param` files (SD 1.x), or SDXL's A1111/ComfyUI layout
`{clip_l, clip_g}`. A file of another model family (SD 1.x, SDXL) than the model's is refused before it is
loaded. Each weight adapter is loaded once under its own peft adapter name, so adapters of different peft
types share one UNet (nested on a layer they both adapt) and an arm switches by making its adapter the only
one that acts.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

from peftlab.errors import UserInputError, error_line
from trainer.engine.families import FAMILIES, SD15, SDXL, Family, refuse_other_family

PEFT_CONFIG_FILE = "adapter_config.json"
PEFT_WEIGHTS_FILE = "adapter_model.safetensors"
DIFFUSERS_LORA_FILE = "pytorch_lora_weights.safetensors"
TI_FILE = "learned_embeds.safetensors"  # the embedding a peftlab TI run writes in its output folder
PEFT_KEY_PREFIX = "base_model.model."
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt")
WEIGHT_METHODS = ("lora", "dora", "loha", "lokr", "oft")
METHODS = (*WEIGHT_METHODS, "ti")
# adapter_config.json's peft_type -> the method (a LORA config with use_dora is DoRA).
PEFT_TYPES = {"LORA": "lora", "LOHA": "loha", "LOKR": "lokr", "OFT": "oft"}
# Key fragments of LyCORIS single files (kohya-style names), which diffusers' loader cannot read.
METHOD_LABELS = {"lora": "LoRA", "dora": "DoRA", "loha": "LoHa", "lokr": "LoKr", "oft": "OFT"}
LYCORIS_KEYS = {"hada_w1_a": "LoHa", "lokr_w1": "LoKr", "oft_blocks": "OFT", "oft_diag": "OFT"}
# An embedding's vectors may be this many times the model's largest row; SD's rows are under 1, trained
# vectors a few; 1e30 overflows the text encoder.
MAX_NORM_RATIO = 1000
# A foreign embedding closer than this fraction of a typical row's norm to a row is a copy of that row.
NEAR_ROW_FRACTION = 0.01

logger = logging.getLogger(__name__)


class AdapterFormat(StrEnum):
    """The on-disk layouts of an adapter that peftlab recognises."""

    DIFFUSERS = "diffusers"
    KOHYA = "kohya"
    PEFT = "peft"
    EMBEDDING = "embedding"


@dataclass(frozen=True)
class DetectedAdapter:
    """What an adapter path holds: its format, its method, the file to read and (TI) the token it names."""

    format: AdapterFormat
    method: str
    weights: Path
    token: str | None = None


def read_state_dict(path: Path) -> dict[str, Any]:
    """The tensors of a safetensors or torch pickle file (torch files are loaded with weights_only)."""
    import torch
    from safetensors.torch import load_file

    try:
        if path.suffix == ".safetensors":
            return load_file(path)
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # a corrupt or foreign file: say which, not how it broke inside torch
        raise UserInputError(f"{path} is not a readable weights file ({type(error).__name__}).") from None


def is_sdxl_embedding(path: Path) -> bool:
    """Whether a safetensors file holds SDXL's A1111/ComfyUI embedding layout (keys clip_l and clip_g)."""
    from safetensors import safe_open

    with safe_open(path, framework="pt") as handle:
        return set(handle.keys()) == set(SDXL.embedding_keys)


def detect_adapter(path: Path) -> DetectedAdapter:
    """What `path` holds (an adapter file, a peft folder, or a peftlab run's output folder such as best/);
    a one-line error when it is none of them."""
    path = Path(path)
    if path.is_dir():
        if (path / PEFT_CONFIG_FILE).is_file():
            if not (path / PEFT_WEIGHTS_FILE).is_file():
                raise UserInputError(f"{path} has {PEFT_CONFIG_FILE} but no {PEFT_WEIGHTS_FILE}.")
            return DetectedAdapter(
                AdapterFormat.PEFT, peft_method(peft_config_read(path)), path / PEFT_WEIGHTS_FILE
            )
        if (path / DIFFUSERS_LORA_FILE).is_file():
            weights = path / DIFFUSERS_LORA_FILE
            return DetectedAdapter(AdapterFormat.DIFFUSERS, lora_method(read_state_dict(weights)), weights)
        if (path / TI_FILE).is_file():
            # An SDXL run's folder: its clip_l/clip_g file carries both encoders' vectors, TI_FILE only one's.
            layouts = [file for file in sorted(path.glob("*.safetensors")) if is_sdxl_embedding(file)]
            return detect_adapter(layouts[0] if layouts else path / TI_FILE)
        raise UserInputError(
            f"{path} holds neither {PEFT_CONFIG_FILE} (peft), {DIFFUSERS_LORA_FILE} (diffusers) nor {TI_FILE} "
            "(textual inversion); give the adapter's folder or file."
        )
    if not path.is_file():
        raise UserInputError(f"adapter {path} does not exist.")
    if path.suffix not in WEIGHT_SUFFIXES:
        raise UserInputError(f"adapter {path} must be one of {', '.join(WEIGHT_SUFFIXES)}.")
    state = read_state_dict(path)
    keys = list(state)
    sdxl_layout = set(keys) == set(SDXL.embedding_keys)
    if (
        sdxl_layout
        or "string_to_param" in state
        or "emb_params" in state
        or (len(keys) == 1 and "lora" not in keys[0])
    ):
        # diffusers' {token: tensor} names its token; peftlab's files say it in their header.
        named = keys[0] if len(keys) == 1 and keys[0] != "emb_params" and not sdxl_layout else None
        token = safetensors_metadata(path).get("placeholder_token") or named
        return DetectedAdapter(AdapterFormat.EMBEDDING, "ti", path, token)
    if any(key.startswith(PEFT_KEY_PREFIX) for key in keys):
        raise UserInputError(
            f"{path} is a peft adapter file: pass its folder (with {PEFT_CONFIG_FILE}) instead of the file."
        )
    lycoris = next((kind for key in keys for part, kind in LYCORIS_KEYS.items() if part in key), None)
    if lycoris:
        raise UserInputError(
            f"{path} is a LyCORIS {lycoris} file, which generation does not read; pass the folder of its peft "
            f"adapter ({PEFT_CONFIG_FILE} + {PEFT_WEIGHTS_FILE}), e.g. the training run's best/."
        )
    if any(key.startswith(("lora_unet_", "lora_te_", "lora_te1_")) for key in keys):
        return DetectedAdapter(AdapterFormat.KOHYA, lora_method(state), path)
    if not any("lora" in key for key in keys):
        raise UserInputError(f"{path} holds no LoRA weights (no key contains 'lora') and is no embedding.")
    return DetectedAdapter(AdapterFormat.DIFFUSERS, lora_method(state), path)


def file_family(path: Path, keys: list[str]) -> Family | None:
    """The model family a LoRA or embedding file was made for, from its metadata (peftlab's
    base_model_family, kohya's ss_base_model_version) or its keys; None when neither tells."""
    metadata = safetensors_metadata(path)
    if metadata.get("base_model_family") in FAMILIES:
        return FAMILIES[metadata["base_model_family"]]
    version = metadata.get("ss_base_model_version", "")
    if version.startswith("sdxl"):
        return SDXL
    if version.startswith("sd_v1"):
        return SD15
    # SDXL's names: the original UNet's blocks in kohya files, its second text encoder, its embedding keys.
    sdxl_marks = ("lora_unet_input_blocks", "lora_unet_output_blocks", "lora_unet_middle_block", "lora_te2_")
    if any(key.startswith(sdxl_marks) or "text_encoder_2." in key or key == "clip_g" for key in keys):
        return SDXL
    # SD 1.x's first UNet level has attention; SDXL's has none.
    if any("down_blocks.0.attentions" in key or "down_blocks_0_attentions" in key for key in keys):
        return SD15
    return None


def lora_method(state: dict[str, Any]) -> str:
    """'dora' for a LoRA file that carries DoRA magnitudes, else 'lora'."""
    return "dora" if any("lora_magnitude_vector" in key or "dora_scale" in key for key in state) else "lora"


def peft_config_read(path: Path) -> Any:
    """The peft config of an adapter folder, of the class its `peft_type` names (LoRA, LoHa, LoKr, OFT)."""
    from peft import LoHaConfig, LoKrConfig, LoraConfig, OFTConfig

    classes = {"LORA": LoraConfig, "LOHA": LoHaConfig, "LOKR": LoKrConfig, "OFT": OFTConfig}
    try:
        peft_type = json.loads((path / PEFT_CONFIG_FILE).read_text(encoding="utf-8")).get("peft_type")
    except (json.JSONDecodeError, UnicodeDecodeError, AttributeError) as error:
        raise UserInputError(f"{path / PEFT_CONFIG_FILE} is not a peft config ({error}).") from None
    if peft_type not in classes:
        raise UserInputError(
            f"{path / PEFT_CONFIG_FILE} has peft_type {peft_type!r}; generation loads {', '.join(classes)}."
        )
    try:
        return classes[peft_type].from_pretrained(path)
    except (ValueError, TypeError) as error:
        raise UserInputError(
            f"{path / PEFT_CONFIG_FILE} is not a valid {peft_type} config ({error})."
        ) from None


def peft_method(config: Any) -> str:
    """The method a peft config trains: LoRA with use_dora is DoRA."""
    method = PEFT_TYPES[str(config.peft_type.value)]
    return "dora" if method == "lora" and config.use_dora else method


def load_weight_adapter(pipe: Any, path: Path, name: str, family: Family = SD15) -> AdapterFormat:
    """Load the weight adapter at `path` into `pipe` (a `family` pipeline) as peft adapter `name`, through the
    loader its format needs; one of another model family, one that loads only in part, or one that leaves a
    parameter without values, is refused."""
    from trainer.engine.proof import refuse_meta_parameters

    path = Path(path)
    detected = detect_adapter(path)
    if detected.format is AdapterFormat.EMBEDDING:
        raise UserInputError(f"{path} is a textual-inversion embedding, not a weight adapter.")
    # A peft folder's weights are its adapter_model.safetensors; the other formats' are the detected file.
    weights = Path(detected.weights)
    weights = weights / PEFT_WEIGHTS_FILE if weights.is_dir() else weights
    found = file_family(weights, list(read_state_dict(weights)))
    label = METHOD_LABELS[detected.method]
    refuse_other_family(f"{label} {path}", label, found, family)
    if detected.format is AdapterFormat.PEFT:
        load_peft_folder(pipe.unet, path, name)
    else:
        in_file = len(complete_lora_modules(detected.weights, read_state_dict(detected.weights)))
        kwargs = {"weight_name": path.name} if path.is_file() else {}
        folder = path.parent if path.is_file() else path
        try:
            pipe.load_lora_weights(folder, adapter_name=name, **kwargs)
        except (ValueError, KeyError, RuntimeError) as error:
            raise UserInputError(f"LoRA {path} does not fit this model: {error_line(error)}") from None
        loaded = adapter_layer_count(pipe, name)
        # diffusers only warns when part of a file loads (e.g. mixed key names): a partial LoRA is refused.
        if loaded < in_file:
            raise UserInputError(
                f"LoRA {path} loaded only {loaded} of its {in_file} modules into this model; the file mixes key "
                "formats or names modules this model lacks."
            )
        refuse_missing_targets(pipe, detected.weights, name)
    refuse_meta_parameters(pipe, path)
    return detected.format


def complete_lora_modules(path: Path, state: dict[str, Any]) -> set[str]:
    """The modules a LoRA state dict adapts, refusing a NaN or Inf tensor and a module without both matrices."""
    import torch

    from trainer.engine.lora_formats import DOWN_UP

    for key, value in state.items():
        if isinstance(value, torch.Tensor) and value.is_floating_point() and not torch.isfinite(value).all():
            raise UserInputError(
                f"LoRA {path} is not finite: tensor {key} holds {int((~torch.isfinite(value)).sum())} NaN or "
                "Inf values; the file is corrupt (retrain it, or download it again)."
            )
    downs, ups = set(), set()
    for key in state:
        if match := DOWN_UP.match(key):
            (downs if match["module"] else ups).add(match["module"] or match["module_up"])
    if downs != ups:
        module = sorted(downs ^ ups)[0]
        has, lacks = ("down (A)", "up (B)") if module in downs else ("up (B)", "down (A)")
        raise UserInputError(
            f"LoRA {path} is incomplete: module {module} has its {has} matrix but no {lacks} matrix; "
            "the file was cut or edited."
        )
    return downs


def load_peft_folder(unet: Any, path: Path, name: str) -> None:
    """Inject a peft adapter folder (LoRA, DoRA, LoHa, LoKr or OFT) into `unet` as adapter `name` and fill it,
    refusing a file whose keys match nothing or that lacks a module its config targets."""
    from peft import inject_adapter_in_model, set_peft_model_state_dict

    config = peft_config_read(path)
    # A folder saved from a PeftModel-wrapped UNet prefixes every key with base_model.model.
    state = {
        key.removeprefix(PEFT_KEY_PREFIX): value
        for key, value in read_state_dict(path / PEFT_WEIGHTS_FILE).items()
    }
    complete_lora_modules(path / PEFT_WEIGHTS_FILE, state)
    try:
        inject_adapter_in_model(config, unet, adapter_name=name)
        result = set_peft_model_state_dict(unet, state, adapter_name=name)
    except (RuntimeError, ValueError) as error:  # a rank other than adapter_config.json's, or no target
        raise UserInputError(
            f"peft adapter {path} does not fit this model's UNet: {error_line(error)}"
        ) from None
    # The base model's and other adapters' keys are missing too (a non-strict load): count only this one's.
    missing = [key for key in result.missing_keys if f".{name}." in key or key.endswith(f".{name}")]
    if result.unexpected_keys or missing:
        example = (list(result.unexpected_keys) or missing)[0]
        raise UserInputError(
            f"peft adapter {path} does not fit this model's UNet "
            f"({len(result.unexpected_keys)} unexpected, {len(missing)} missing keys, e.g. {example})."
        )


def refuse_missing_targets(pipe: Any, weights: Path, name: str) -> None:
    """Refuse a diffusers file that adapts fewer UNet modules than the target_modules its header records (a
    file with modules cut out loads the rest without a word)."""
    from peft import LoraConfig
    from peft.tuners.tuners_utils import check_target_module_exists

    header = safetensors_metadata(weights).get("lora_adapter_metadata")
    targets = json.loads(header).get("unet.target_modules") if header else None
    if not targets:
        return
    config = LoraConfig(target_modules=targets)
    expected = [key for key, _ in pipe.unet.named_modules() if check_target_module_exists(config, key)]
    loaded = sum(name in layer._get_available_adapters() for layer in tuner_layers(pipe.unet))
    if loaded < len(expected):
        raise UserInputError(
            f"LoRA {weights} adapts {loaded} of the {len(expected)} UNet modules its header's target_modules "
            "name; modules were cut from the file."
        )


def tuner_layers(*components: Any) -> Iterator[Any]:
    """Every peft tuner layer of `components` (nested ones included)."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    for component in components:
        for module in component.modules():
            if isinstance(module, BaseTunerLayer):
                yield module


def pipe_adapted_parts(pipe: Any) -> list[Any]:
    """The parts of `pipe` adapters can wrap: the UNet and each text encoder it has (SDXL has two)."""
    parts = (getattr(pipe, name, None) for name in ("unet", "text_encoder", "text_encoder_2"))
    return [part for part in parts if part is not None]


def adapter_layer_count(pipe: Any, name: str) -> int:
    """How many modules of the UNet and text encoder carry adapter `name`."""
    return sum(name in layer._get_available_adapters() for layer in tuner_layers(*pipe_adapted_parts(pipe)))


def adapter_activate(pipe: Any, name: str | None) -> None:
    """Make adapter `name` the only one that acts (None: none does); other adapters' layers pass through."""
    for layer in tuner_layers(*pipe_adapted_parts(pipe)):
        holds = name is not None and name in layer._get_available_adapters()
        if holds:
            layer.set_adapter(name, inference_mode=True)
        layer.enable_adapters(holds)


def adapter_run_config(path: Path) -> dict[str, Any]:
    """The training config in the run.json of the peftlab run that wrote `path` (beside it, or above best/
    and last/); empty for an adapter trained elsewhere."""
    path = Path(path)
    folder = path if path.is_dir() else path.parent
    for candidate in (folder / "run.json", folder.parent / "run.json"):
        if candidate.is_file():
            try:
                return json.loads(candidate.read_text(encoding="utf-8")).get("config", {})
            except (json.JSONDecodeError, UnicodeDecodeError, AttributeError):
                return {}
    return {}


def safetensors_metadata(path: Path) -> dict[str, str]:
    """The header metadata of a safetensors file; empty for other files."""
    from safetensors import safe_open

    if Path(path).suffix != ".safetensors":
        return {}
    with safe_open(path, framework="pt") as handle:
        return handle.metadata() or {}


def ti_initializer_token(path: Path, given: str | None) -> str | None:
    """The token whose embedding the TI vector started from: given, in the file's metadata, or in its run;
    None for an embedding that says nothing of its start (one trained elsewhere)."""
    return (
        given
        or safetensors_metadata(path).get("initializer_token")
        or adapter_run_config(path).get("initializer_token")
        or None
    )


def refuse_non_finite_vectors(path: Path, vectors: Any, table: Any) -> None:
    """Refuse NaN or Inf values, and vectors so large that the text encoder's sums overflow."""
    import torch

    finite = torch.isfinite(vectors)
    if not finite.all():
        row = int((~finite).any(dim=1).nonzero()[0])
        raise UserInputError(
            f"embedding {path} is not finite: vector {row} holds {int((~finite[row]).sum())} NaN or Inf of its "
            f"{vectors.shape[1]} values; the file is corrupt (retrain it, or download it again)."
        )
    norms, largest = vectors.norm(dim=1), float(table.norm(dim=1).max())
    # 1e30 is finite, yet its square overflows float32: every prompt with the token renders black.
    limit = MAX_NORM_RATIO * largest
    if not (norms <= limit).all():
        row = int((~(norms <= limit)).nonzero()[0])
        raise UserInputError(
            f"embedding {path} is not finite in use: vector {row} has norm {float(norms[row]):.3g}, more than "
            f"{MAX_NORM_RATIO} times the model's largest ({largest:.3g}); the text encoder overflows on it."
        )


def refuse_untrained_vectors(
    tokenizer: Any, text_encoder: Any, path: Path, tensor: Any, foreign: bool = False
) -> Any:
    """Refuse a non-finite, huge or all-zero embedding, or one whose vector equals an existing row of the
    model's table; for a `foreign` file (its initializer unknown) also one within a small distance of any
    row. Return each vector's nearest row of the table, [vectors, width]."""
    import torch

    vectors = tensor.reshape(-1, tensor.shape[-1]).float()
    table = text_encoder.get_input_embeddings().weight.detach().float().cpu()
    refuse_non_finite_vectors(path, vectors, table)
    if not vectors.abs().sum(dim=1).all():
        raise UserInputError(f"embedding {path} holds an all-zero vector: it was never trained.")
    distances, nearest = torch.cdist(vectors, table).min(dim=1)
    words = tokenizer.convert_ids_to_tokens(nearest.tolist())
    for vector, row, word in zip(vectors, nearest.tolist(), words, strict=True):
        if torch.equal(table[row], vector):
            raise UserInputError(
                f"embedding {path} equals the model's own embedding of {word!r}: it is an untrained copy."
            )
    if foreign:
        # Without its initializer, the whole table is the reference: a vector next to a row is a copy of it.
        limit = NEAR_ROW_FRACTION * float(table.norm(dim=1).median())
        for index, (distance, word) in enumerate(zip(distances.tolist(), words, strict=True)):
            logger.info(
                "embedding %s vector %d: nearest token %r at distance %.4g", path, index, word, distance
            )
            if distance < limit:
                raise UserInputError(
                    f"embedding {path} vector {index} lies within {distance:.3g} of the model's own embedding of "
                    f"{word!r} (a typical row's norm is {limit / NEAR_ROW_FRACTION:.3g}): it is an untrained "
                    "copy; if it was trained from that word, give --ti-initializer to check its effect."
                )
    return table[nearest]


def embedding_width(state: dict[str, Any]) -> tuple[Any, int]:
    """The embedding tensor of a TI file (diffusers or A1111) and its width."""
    import torch

    if "string_to_param" in state:  # A1111 .pt: {"string_to_param": {"*": tensor}}
        tensor = next(iter(state["string_to_param"].values()))
    elif "emb_params" in state:  # A1111 safetensors
        tensor = state["emb_params"]
    elif len(state) == 1:  # diffusers: {token: tensor}
        tensor = next(iter(state.values()))
    else:
        raise UserInputError(
            f"the embedding file has {len(state)} entries; expected one {{token: tensor}} or 'emb_params'."
        )
    if not isinstance(tensor, torch.Tensor) or tensor.ndim not in (1, 2):
        raise UserInputError("the embedding file's tensor must have shape [width] or [vectors, width].")
    return tensor, int(tensor.shape[-1])


def embedding_tensors(path: Path, state: dict[str, Any], family: Family) -> list[Any]:
    """The vectors of an embedding file for each of `family`'s text encoders: SD 1.x's one tensor
    (diffusers or A1111), or SDXL's `clip_l` and `clip_g`; a file of the other family is refused."""
    if set(state) == set(SDXL.embedding_keys):
        refuse_other_family(f"embedding {path}", "embedding", SDXL, family)
        return [state[key] for key in family.embedding_keys]
    tensor, _ = embedding_width(state)
    if len(family.text_parts) > 1:
        found = file_family(path, list(state))
        if found is family:  # one encoder's file of an SDXL pair, as diffusers' SDXL example writes them
            raise UserInputError(
                f"embedding {path} holds the vectors of one of {family.label}'s two text encoders; give the file "
                f"with keys {' and '.join(family.embedding_keys)} (A1111/ComfyUI layout) instead."
            )
        refuse_other_family(f"embedding {path}", "embedding", SD15, family)
    return [tensor]


def load_textual_inversion(
    pipe: Any, path: Path, token: str, initializer: str | None, family: Family = SD15
) -> list[tuple[Any, list[int], Any]]:
    """Add `token` with the embedding at `path` to each text encoder of `pipe` (a `family` pipeline): per
    encoder, the encoder, the new token ids (one per vector) and the untrained state the effect check
    renders for reference: the `initializer`'s row, or (for an embedding that names none) each vector's
    nearest row of the table."""
    path = Path(path)
    if not path.is_file():
        raise UserInputError(f"embedding {path} does not exist.")
    tensors = embedding_tensors(path, read_state_dict(path), family)
    loaded = []
    for part, tensor in zip(family.text_parts, tensors, strict=True):
        tokenizer, text_encoder = getattr(pipe, part.tokenizer), getattr(pipe, part.encoder)
        width = int(tensor.shape[-1])
        expected = text_encoder.get_input_embeddings().weight.shape[1]
        # diffusers' own message for this case prints literal {...} placeholders: say it plainly first.
        if width != expected:
            raise UserInputError(f"embedding {path.name}: expected width {expected}, file has {width}.")
        if token in tokenizer.get_vocab():
            raise UserInputError(
                f"token {token!r} is already in the model's vocabulary; choose another --token."
            )
        nearest = refuse_untrained_vectors(tokenizer, text_encoder, path, tensor, foreign=initializer is None)
        reference = (
            nearest if initializer is None else initializer_row(tokenizer, text_encoder, path, initializer)
        )
        pipe.load_textual_inversion(tensor, token=token, tokenizer=tokenizer, text_encoder=text_encoder)
        vectors = 1 if tensor.ndim == 1 else tensor.shape[0]
        names = [token] + [f"{token}_{index}" for index in range(1, vectors)]
        loaded.append((text_encoder, tokenizer.convert_tokens_to_ids(names), reference))
    return loaded


def initializer_row(tokenizer: Any, text_encoder: Any, path: Path, token: str) -> Any:
    """The model's embedding of the one-token word the TI vector started from."""
    ids = tokenizer.encode(token, add_special_tokens=False)
    if len(ids) != 1:
        raise UserInputError(
            f"initializer {token!r} of {path} is {len(ids)} tokens in this model; give --ti-initializer "
            "with the one-token word the embedding was trained from."
        )
    return text_encoder.get_input_embeddings().weight[ids[0]].detach().clone()
