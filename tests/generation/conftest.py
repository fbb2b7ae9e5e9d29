"""Adapters for generation tests, built on the tiny model the ways users (and the reference notebook) made them."""

from pathlib import Path

import pytest

# The trainer's small prepared dataset and fast options, for the tests that train an adapter to render with.
from tests.trainer.conftest import fast_options, prepared_dir  # noqa: F401

LORA_TARGETS = ["to_q", "to_k", "to_v", "to_out.0"]
INITIALIZER = "style"


def initializer_row(model_dir: Path):
    """The tiny text encoder's embedding of the initializer word."""
    from transformers import CLIPTextModel, CLIPTokenizer

    tokenizer = CLIPTokenizer.from_pretrained(model_dir, subfolder="tokenizer")
    (token_id,) = tokenizer.encode(INITIALIZER, add_special_tokens=False)
    encoder = CLIPTextModel.from_pretrained(model_dir, subfolder="text_encoder")
    return encoder.get_input_embeddings().weight[token_id].detach().clone()


def lora_unet(model_dir: Path, seed: int):
    """The tiny model's UNet with a random, non-zero rank-4 LoRA (so its effect is visible)."""
    import torch
    from diffusers import UNet2DConditionModel
    from peft import LoraConfig

    unet = UNet2DConditionModel.from_pretrained(model_dir, subfolder="unet")
    torch.manual_seed(seed)
    config = LoraConfig(r=4, lora_alpha=4, target_modules=LORA_TARGETS, init_lora_weights=False)
    unet.add_adapter(config)
    return unet, config


def save_diffusers_lora(unet, config, output: Path) -> Path:
    """Save `unet`'s LoRA the diffusers way (pytorch_lora_weights.safetensors, with its alpha)."""
    from diffusers import StableDiffusionPipeline
    from diffusers.utils import convert_state_dict_to_diffusers
    from peft.utils import get_peft_model_state_dict

    StableDiffusionPipeline.save_lora_weights(
        output,
        unet_lora_layers=convert_state_dict_to_diffusers(get_peft_model_state_dict(unet)),
        unet_lora_adapter_metadata=config.to_dict(),
    )
    return output


@pytest.fixture(scope="session")
def adapters(tiny_model_dir: Path, tmp_path_factory) -> dict[str, Path]:
    """Paths of test adapters: diffusers, peft folder, zero-effect LoRA, kohya (if available), TI files."""
    import torch
    from diffusers import UNet2DConditionModel
    from peft import LoraConfig, get_peft_model
    from safetensors.torch import save_file

    root = tmp_path_factory.mktemp("adapters")
    paths: dict[str, Path] = {}

    unet, config = lora_unet(tiny_model_dir, seed=1)
    paths["diffusers"] = save_diffusers_lora(unet, config, root / "diffusers")

    # The reference notebook's way: a peft-wrapped UNet saved with save_pretrained (adapter_config.json +
    # adapter_model.safetensors, keys base_model.model....), which diffusers' load_lora_weights ignores.
    torch.manual_seed(2)
    base_unet = UNet2DConditionModel.from_pretrained(tiny_model_dir, subfolder="unet")
    peft_unet = get_peft_model(
        base_unet, LoraConfig(r=4, lora_alpha=4, target_modules=LORA_TARGETS, init_lora_weights=False)
    )
    peft_unet.save_pretrained(root / "peft")
    paths["peft"] = root / "peft"

    # diffusers' converter renames only to_q/k/v/out.0: with proj_in/proj_out the file mixes key formats.
    from diffusers.utils import convert_state_dict_to_diffusers
    from peft.utils import get_peft_model_state_dict

    mixed_unet = UNet2DConditionModel.from_pretrained(tiny_model_dir, subfolder="unet")
    mixed_unet.add_adapter(
        LoraConfig(
            r=4, lora_alpha=4, target_modules=[*LORA_TARGETS, "proj_in", "proj_out"], init_lora_weights=False
        )
    )
    from diffusers import StableDiffusionPipeline

    StableDiffusionPipeline.save_lora_weights(
        root / "mixed",
        unet_lora_layers=convert_state_dict_to_diffusers(get_peft_model_state_dict(mixed_unet)),
    )
    paths["mixed"] = root / "mixed"

    # All-zero up (B) weights: the LoRA adds exactly nothing, whatever its down weights.
    zero_unet, zero_config = lora_unet(tiny_model_dir, seed=3)
    with torch.no_grad():
        for name, parameter in zero_unet.named_parameters():
            if "lora_B" in name:
                parameter.zero_()
    paths["zero"] = save_diffusers_lora(zero_unet, zero_config, root / "zero")

    try:
        from trainer.engine.lora_formats import diffusers_to_kohya
    except ImportError:
        pass
    else:
        from diffusers.utils import convert_state_dict_to_diffusers
        from peft.utils import get_peft_model_state_dict

        kohya_unet, _ = lora_unet(tiny_model_dir, seed=4)
        state = convert_state_dict_to_diffusers(get_peft_model_state_dict(kohya_unet))
        save_file(diffusers_to_kohya(state, alpha=4.0), root / "kohya.safetensors")
        paths["kohya"] = root / "kohya.safetensors"

    torch.manual_seed(5)
    # Strong random vectors so the token visibly steers the tiny text encoder; the initializer in the header
    # as peftlab writes it (the effect check renders it as the untrained reference).
    started_from = {"initializer_token": INITIALIZER}
    save_file({"<peftlab-ti>": torch.randn(32) * 3}, root / "ti.safetensors", metadata=started_from)
    paths["ti"] = root / "ti.safetensors"
    save_file({"emb_params": torch.randn(2, 32) * 3}, root / "a1111.safetensors", metadata=started_from)
    paths["ti_a1111"] = root / "a1111.safetensors"
    # Untrained embeddings: zeros, the initializer's own row, and the initializer moved by a hair.
    initializer = initializer_row(tiny_model_dir)
    save_file({"<z>": torch.zeros(32)}, root / "ti_zero.safetensors", metadata=started_from)
    paths["ti_zero"] = root / "ti_zero.safetensors"
    save_file({"<c>": initializer.clone()}, root / "ti_copy.safetensors", metadata=started_from)
    paths["ti_copy"] = root / "ti_copy.safetensors"
    save_file({"<n>": initializer + 1e-6}, root / "ti_nudged.safetensors", metadata=started_from)
    paths["ti_nudged"] = root / "ti_nudged.safetensors"
    save_file({"<u>": torch.randn(32) * 3}, root / "ti_unknown.safetensors")
    # Trained elsewhere, its start unknown, and still next to a row of the table: an untrained copy.
    save_file({"<f>": initializer + 1e-4}, root / "ti_foreign_copy.safetensors")
    paths["ti_foreign_copy"] = root / "ti_foreign_copy.safetensors"
    paths["ti_unknown"] = root / "ti_unknown.safetensors"
    save_file({"<wide>": torch.randn(768)}, root / "wide.safetensors")
    paths["ti_wide"] = root / "wide.safetensors"
    return paths


@pytest.fixture(autouse=True)
def media_root(settings, tmp_path) -> Path:
    """Images of each test go to a temporary MEDIA_ROOT, never into the repository's var/."""
    settings.MEDIA_ROOT = tmp_path / "media"
    return settings.MEDIA_ROOT


# The weight methods beside LoRA, as peft builds them for the tiny UNet, and the spread of the random values
# that makes each visibly change a 64x64 render (LoHa and LoKr multiply their factors, so smaller is enough).
METHOD_SPREAD = {"dora": 0.1, "loha": 0.5, "lokr": 0.5, "oft": 0.1}


def method_config(method: str):
    """A peft config of `method` on the tiny UNet's attention projections, peft's own initialisation."""
    from peft import LoHaConfig, LoKrConfig, LoraConfig, OFTConfig

    return {
        "dora": lambda: LoraConfig(r=4, lora_alpha=4, target_modules=LORA_TARGETS, use_dora=True),
        "loha": lambda: LoHaConfig(r=4, alpha=4, target_modules=LORA_TARGETS),
        "lokr": lambda: LoKrConfig(r=4, alpha=4, target_modules=LORA_TARGETS),
        "oft": lambda: OFTConfig(r=0, oft_block_size=4, target_modules=LORA_TARGETS),
    }[method]()


def method_model(model_dir: Path, method: str, trained: bool):
    """A PeftModel of the tiny UNet with a `method` adapter: random non-zero values (`trained`), or peft's
    initialisation, which changes nothing (a dead adapter)."""
    import torch
    from diffusers import UNet2DConditionModel
    from peft import get_peft_model

    torch.manual_seed(11)
    model = get_peft_model(
        UNet2DConditionModel.from_pretrained(model_dir, subfolder="unet"), method_config(method)
    )
    if trained:
        with torch.no_grad():
            for parameter in model.parameters():
                if parameter.requires_grad:
                    parameter.copy_(torch.randn_like(parameter) * METHOD_SPREAD[method])
    return model


def build_method_adapters(model_dir: Path, root: Path) -> dict[str, Path]:
    """Per method, a trained and a dead adapter of the model at `model_dir` in peft's save_pretrained layout
    ("loha", "loha_dead", ...), and DoRA also as the diffusers file of its family's pipeline ("dora_diffusers",
    "dora_diffusers_dead"), from the same weights."""
    from diffusers.utils import convert_state_dict_to_diffusers
    from peft.utils import get_peft_model_state_dict

    from trainer.engine.families import detect_family

    pipeline = detect_family(str(model_dir)).pipeline()
    paths: dict[str, Path] = {}
    for method in METHOD_SPREAD:
        for trained in (True, False):
            name = method if trained else f"{method}_dead"
            model = method_model(model_dir, method, trained)
            model.save_pretrained(root / name)
            paths[name] = root / name
            if method == "dora":
                unet = model.base_model.model
                pipeline.save_lora_weights(
                    root / f"dora_diffusers{name[4:]}",
                    unet_lora_layers=convert_state_dict_to_diffusers(get_peft_model_state_dict(unet)),
                    unet_lora_adapter_metadata=method_config(method).to_dict(),
                )
                paths[f"dora_diffusers{name[4:]}"] = root / f"dora_diffusers{name[4:]}"
    return paths


@pytest.fixture(scope="session")
def method_adapters(tiny_model_dir: Path, tmp_path_factory) -> dict[str, Path]:
    """The adapters of every method (`build_method_adapters`) on the tiny SD 1.x model."""
    return build_method_adapters(tiny_model_dir, tmp_path_factory.mktemp("methods"))


@pytest.fixture(scope="session")
def sdxl_method_adapters(tiny_sdxl_dir: Path, tmp_path_factory) -> dict[str, Path]:
    """The adapters of every method (`build_method_adapters`) on the tiny SDXL model."""
    return build_method_adapters(tiny_sdxl_dir, tmp_path_factory.mktemp("sdxl-methods"))
