"""DoRA, LoHa, LoKr and OFT files on the tiny SD 1.x and SDXL models: written, proven at save time, and refused
with a module lost, altered or misnamed."""

import json
import shutil

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from peftlab.errors import UserInputError
from trainer.engine.config import CONFIG_CLASSES, build_config
from trainer.engine.families import detect_family
from trainer.engine.lora_formats import kohya_module_name
from trainer.engine.lycoris_formats import lycoris_deltas, peft_to_lycoris
from trainer.engine.methods import LORA_WEIGHTS, METHODS, PEFT_CONFIG, PEFT_WEIGHTS, make_method
from trainer.engine.methods.lycoris import PEFT_PREFIX
from trainer.engine.proof import MAGNITUDE, trained_lora_deltas, weight_changes

# Attention projections (linear) and proj_in (a 1x1 convolution in SD 1.x and the tiny model).
TARGETS = "to_q,to_k,to_v,to_out.0,proj_in"
FILES = {
    "dora": [LORA_WEIGHTS],
    "loha": [PEFT_CONFIG, PEFT_WEIGHTS, "loha_lycoris.safetensors"],
    "lokr": [PEFT_CONFIG, PEFT_WEIGHTS, "lokr_lycoris.safetensors"],
    "oft": [PEFT_CONFIG, PEFT_WEIGHTS],
}
MODULES = {"sd15": 36, "sdxl": 102}  # the tiny UNet's modules that TARGETS names, per family


def trained(tiny_model_dir, method: str, dtype=torch.float32, **options):
    """`method` set up on the tiny UNet (frozen weights in `dtype`), every trained tensor moved off its start."""
    from trainer.engine.data import load_components

    config = build_config(method, model=str(tiny_model_dir), **({"target_modules": TARGETS} | options))
    adapter = make_method(config)
    parts = load_components(str(tiny_model_dir), dtype)
    adapter.setup(parts)
    torch.manual_seed(0)
    with torch.no_grad():
        for parameter in parts.unet.parameters():
            if parameter.requires_grad:
                parameter.add_(torch.randn_like(parameter) * 0.1)
    return adapter, parts.unet


def middle(names) -> str:
    """A module in the middle of the sorted names: a check that stopped after the first one would miss it."""
    ordered = sorted(names)
    assert ordered[len(ordered) // 2] != ordered[0]
    return ordered[len(ordered) // 2]


def rewrite(source, target, change) -> None:
    """Copy the safetensors file `source` to `target` with `change(tensors)` applied, its header kept."""
    with safe_open(source, framework="pt") as handle:
        header = handle.metadata()
    target.parent.mkdir(parents=True, exist_ok=True)
    save_file(change(load_file(source)), target, metadata=header)


def test_every_method_is_registered_with_its_config():
    assert METHODS.keys() == CONFIG_CLASSES.keys() == {"lora", "dora", "loha", "lokr", "oft", "ti"}
    for name, method in METHODS.items():
        assert method.config_class is CONFIG_CLASSES[name] and method.config_class.method == name


@pytest.mark.parametrize("method", sorted(FILES))
def test_each_method_writes_and_proves_its_files(family_model_dir, tmp_path, method):
    modules = MODULES[detect_family(str(family_model_dir)).name]
    adapter, unet = trained(family_model_dir, method)
    assert adapter.save(unet, tmp_path) == FILES[method]
    assert sorted(path.name for path in tmp_path.iterdir()) == sorted(FILES[method])
    if method == "dora":
        expected = trained_lora_deltas(unet, 1.0)
        assert sum(name.endswith(MAGNITUDE) for name in expected) == len(expected) // 2 == modules
        return
    config = json.loads((tmp_path / PEFT_CONFIG).read_text())
    assert config["peft_type"] == method.upper()
    assert config["base_model_name_or_path"] == str(family_model_dir)
    assert sorted(config["target_modules"]) == sorted(TARGETS.split(","))
    tensors = load_file(tmp_path / PEFT_WEIGHTS)
    assert tensors and all(key.startswith(PEFT_PREFIX) for key in tensors)
    assert len(weight_changes(unet)) == modules


@pytest.mark.parametrize("method", sorted(FILES))
def test_half_precision_runs_prove_every_method_in_float32(family_model_dir, tmp_path, method):
    """Over a bf16 UNet the proof loads a float32 copy: what is compared must not depend on the base's dtype."""
    adapter, unet = trained(family_model_dir, method, torch.bfloat16)
    assert adapter.save(unet, tmp_path) == FILES[method]
    assert adapter.proof.pipe.unet.dtype == torch.float32


@pytest.mark.parametrize("method", ["loha", "lokr", "oft"])
def test_peft_folder_loads_through_peft_by_its_config(family_model_dir, tmp_path, method):
    """What generation does with the folder: the config class from adapter_config.json, then PeftModel, into
    a UNet loaded afresh from the model folder (not the proof's)."""
    from diffusers import UNet2DConditionModel
    from peft import PeftConfig, PeftModel

    adapter, unet = trained(family_model_dir, method)
    adapter.save(unet, tmp_path)
    assert PeftConfig.from_pretrained(tmp_path).peft_type.value == method.upper()
    fresh = UNet2DConditionModel.from_pretrained(family_model_dir, subfolder="unet")
    model = PeftModel.from_pretrained(fresh, tmp_path)
    loaded = weight_changes(model.base_model.model)
    expected = weight_changes(unet)
    assert loaded.keys() == expected.keys()
    for name, change in expected.items():
        torch.testing.assert_close(loaded[name], change)


def test_dora_file_loads_through_the_familys_stock_pipeline(family_model_dir, tmp_path):
    """DoRA's diffusers file in a pipeline loaded afresh (StableDiffusionPipeline or StableDiffusionXLPipeline,
    as model_index.json names it): every module wrapped as DoRA, its update and magnitude as trained."""
    from diffusers import DiffusionPipeline

    adapter, unet = trained(family_model_dir, "dora")
    adapter.save(unet, tmp_path)
    pipe = DiffusionPipeline.from_pretrained(family_model_dir)
    assert type(pipe).__name__ == detect_family(str(family_model_dir)).pipeline_class
    pipe.load_lora_weights(tmp_path, adapter_name="dora")
    expected = trained_lora_deltas(unet, 1.0)
    loaded = {}
    for name, module in pipe.unet.named_modules():
        if "dora" in getattr(module, "lora_magnitude_vector", {}):
            loaded[name] = module.scaling["dora"] * (
                module.lora_B["dora"].weight.flatten(1) @ module.lora_A["dora"].weight.flatten(1)
            )
            loaded[name + MAGNITUDE] = module.lora_magnitude_vector["dora"].weight
    assert loaded.keys() == expected.keys()
    for name, value in expected.items():
        torch.testing.assert_close(loaded[name].detach(), value)


def test_dora_file_with_a_lost_or_altered_module_is_refused(family_model_dir, tmp_path):
    adapter, unet = trained(family_model_dir, "dora")
    adapter.save(unet, tmp_path)
    expected = trained_lora_deltas(unet, 1.0)
    name = middle(key for key in expected if not key.endswith(MAGNITUDE))
    rewrite(
        tmp_path / LORA_WEIGHTS,
        tmp_path / "lost" / LORA_WEIGHTS,
        lambda state: {key: value for key, value in state.items() if f".{name}." not in key},
    )
    with pytest.raises(
        UserInputError,
        match=f"lost/pytorch_lora_weights.safetensors did not load back: 2 of {len(expected)} ",
    ):
        adapter.proof.lora(tmp_path / "lost" / LORA_WEIGHTS, expected)
    magnitude = f"unet.{name}{MAGNITUDE}"
    rewrite(
        tmp_path / LORA_WEIGHTS,
        tmp_path / "altered" / LORA_WEIGHTS,
        lambda state: state | {magnitude: state[magnitude] * 1.01},
    )
    with pytest.raises(UserInputError, match=f"module {name}{MAGNITUDE} differs from the trained weights"):
        adapter.proof.lora(tmp_path / "altered" / LORA_WEIGHTS, expected)


@pytest.mark.parametrize("method", ["loha", "lokr", "oft"])
def test_peft_folder_with_a_lost_or_altered_module_is_refused(family_model_dir, tmp_path, method):
    adapter, unet = trained(family_model_dir, method)
    adapter.save(unet, tmp_path)
    expected = weight_changes(unet)
    name = middle(expected)
    for case, change in (
        ("lost", lambda state: {key: value for key, value in state.items() if f".{name}." not in key}),
        (
            "altered",
            lambda state: {key: value * (1.5 if f".{name}." in key else 1) for key, value in state.items()},
        ),
    ):
        (tmp_path / case).mkdir()
        shutil.copyfile(tmp_path / PEFT_CONFIG, tmp_path / case / PEFT_CONFIG)
        rewrite(tmp_path / PEFT_WEIGHTS, tmp_path / case / PEFT_WEIGHTS, change)
        with pytest.raises(
            UserInputError, match=f"{case}/{PEFT_WEIGHTS} did not load back: module {name} differs"
        ):
            adapter.proof.peft_folder(tmp_path / case, expected)
    # A refused folder leaves the proof pipeline's UNet as it was: the good folder still proves.
    adapter.proof.peft_folder(tmp_path, expected)


@pytest.mark.parametrize(
    ("method", "options"),
    [("loha", {}), ("lokr", {}), ("lokr", {"rank": 2}), ("lokr", {"rank": 2, "decompose_both": True})],
)
def test_lycoris_file_with_a_lost_or_altered_module_is_refused(family_model_dir, tmp_path, method, options):
    adapter, unet = trained(family_model_dir, method, **options)
    adapter.save(unet, tmp_path)
    expected = weight_changes(unet)
    path = tmp_path / adapter.lycoris_file
    name = kohya_module_name(middle(expected), detect_family(str(family_model_dir)))
    rewrite(
        path,
        tmp_path / "lost.safetensors",
        lambda state: {k: v for k, v in state.items() if not k.startswith(f"{name}.")},
    )
    with pytest.raises(
        UserInputError, match=f"lost.safetensors did not load back: 1 of {len(expected)} trained"
    ):
        adapter.proof.lycoris(tmp_path / "lost.safetensors", expected)
    first = sorted(
        key for key in load_file(path) if key.startswith(f"{name}.") and not key.endswith(".alpha")
    )[0]
    rewrite(path, tmp_path / "altered.safetensors", lambda state: state | {first: state[first] * 1.01})
    with pytest.raises(UserInputError, match=f"module {name} differs from the trained weights"):
        adapter.proof.lycoris(tmp_path / "altered.safetensors", expected)


@pytest.mark.parametrize(
    ("model", "name", "width"),
    [
        ("tiny_model_dir", "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q", 32),
        # SDXL: the original UNet's names, as kohya's SDXL LoRA files (one mapping, the family's); the tiny
        # model's first level has no attention, so its first attention is input block 4's, 64 wide.
        ("tiny_sdxl_dir", "lora_unet_input_blocks_4_1_transformer_blocks_0_attn1_to_q", 64),
    ],
)
def test_lycoris_keys_follow_the_kohya_layout(request, tmp_path, model, name, width):
    family_model_dir = request.getfixturevalue(model)
    family = detect_family(str(family_model_dir))
    adapter, unet = trained(family_model_dir, "loha")
    adapter.save(unet, tmp_path)
    state = load_file(tmp_path / "loha_lycoris.safetensors")
    parts = sorted(key.removeprefix(f"{name}.") for key in state if key.startswith(f"{name}."))
    assert parts == ["alpha", "hada_w1_a", "hada_w1_b", "hada_w2_a", "hada_w2_b"]
    assert float(state[f"{name}.alpha"]) == 8.0 and state[f"{name}.hada_w1_a"].shape == (width, 8)
    # Every trained module under the one kohya name the family gives it (the LoRA export's too).
    assert {key.rpartition(".")[0] for key in state} == {
        kohya_module_name(module, family) for module in weight_changes(unet)
    }
    if family.name == "sdxl":
        assert not any(marker in key for key in state for marker in ("down_blocks", "mid_block", "up_blocks"))
        assert any(key.startswith("lora_unet_middle_block_1_") for key in state)
        assert any(key.startswith("lora_unet_output_blocks_") for key in state)
    with safe_open(tmp_path / "loha_lycoris.safetensors", framework="pt") as handle:
        header = handle.metadata()
    assert header["ss_network_module"] == "lycoris.kohya" and json.loads(header["ss_network_args"]) == {
        "algo": "loha"
    }
    assert header["ss_base_model_version"] == family.kohya_version
    assert header["base_model_family"] == family.name


@pytest.mark.parametrize(
    ("method", "file"), [("lora", "lora_kohya.safetensors"), ("loha", "loha_lycoris.safetensors")]
)
def test_sdxl_resnet_layers_are_saved_under_the_original_unets_names(tiny_sdxl_dir, tmp_path, method, file):
    """Resnet layers (the middle block's too) under kohya's SDXL names (`in_layers_2` for conv1, ...); the save
    proves them, the kohya LoRA file through stock diffusers, which reads those names back."""
    adapter, unet = trained(tiny_sdxl_dir, method, target_modules="conv1,conv2,time_emb_proj,conv_shortcut")
    adapter.save(unet, tmp_path)
    modules = {key.partition(".")[0] for key in load_file(tmp_path / file)}
    assert {"lora_unet_input_blocks_1_0_in_layers_2", "lora_unet_middle_block_2_out_layers_3"} <= modules
    assert "lora_unet_output_blocks_0_0_skip_connection" in modules
    assert not any(layer in name for name in modules for layer in ("conv1", "conv2", "time_emb", "shortcut"))


@pytest.mark.parametrize("method", ["loha", "lokr"])
def test_save_refuses_a_lycoris_file_that_lost_a_module(family_model_dir, tmp_path, monkeypatch, method):
    """The save itself proves its LyCORIS file: one written without a module stops it with one line."""
    from trainer.engine import lycoris_formats

    adapter, unet = trained(family_model_dir, method)
    lost = kohya_module_name(middle(weight_changes(unet)), detect_family(str(family_model_dir)))
    convert = lycoris_formats.peft_to_lycoris
    monkeypatch.setattr(
        lycoris_formats,
        "peft_to_lycoris",
        lambda *args: {k: v for k, v in convert(*args).items() if not k.startswith(f"{lost}.")},
    )
    with pytest.raises(
        UserInputError,
        match=f"{adapter.lycoris_file} did not load back: 1 of {len(weight_changes(unet))} trained adapter modules "
        f"are missing \\(e.g. {lost}\\)",
    ):
        adapter.save(unet, tmp_path)


@pytest.mark.parametrize("method", ["loha", "lokr"])
def test_sdxl_lycoris_file_under_diffusers_names_is_refused(tiny_sdxl_dir, tmp_path, method):
    """A LyCORIS SDXL file whose modules carry diffusers' names (`lora_unet_down_blocks_...`), not the
    original UNet's that kohya, A1111 and ComfyUI's SDXL files use, does not prove out."""
    adapter, unet = trained(tiny_sdxl_dir, method)
    adapter.save(unet, tmp_path)
    expected = weight_changes(unet)
    diffusers_names = peft_to_lycoris(
        {key.removeprefix(PEFT_PREFIX): value for key, value in load_file(tmp_path / PEFT_WEIGHTS).items()},
        adapter.config.alpha,
        adapter.config.rank,
    )
    assert any(key.startswith("lora_unet_down_blocks_1_") for key in diffusers_names)
    save_file(diffusers_names, tmp_path / "diffusers-names.safetensors")
    with pytest.raises(
        UserInputError,
        match=f"diffusers-names.safetensors did not load back: {len(expected)} of {len(expected)} trained",
    ):
        adapter.proof.lycoris(tmp_path / "diffusers-names.safetensors", expected)
    # A module under the name of another block (input block 4 filed as 5) is refused too.
    path = tmp_path / adapter.lycoris_file
    rewrite(
        path,
        tmp_path / "moved.safetensors",
        lambda state: {
            key.replace("_input_blocks_4_1_", "_input_blocks_5_1_"): v for key, v in state.items()
        },
    )
    with pytest.raises(
        UserInputError, match="moved.safetensors did not load back: .* lora_unet_input_blocks_4_1"
    ):
        adapter.proof.lycoris(tmp_path / "moved.safetensors", expected)


def test_lycoris_formulas_rebuild_the_update_by_hand():
    """The rebuild follows LyCORIS: a Hadamard product of two low-rank products, a Kronecker product."""
    torch.manual_seed(0)
    a, b, c, d = torch.randn(6, 2), torch.randn(2, 4), torch.randn(6, 2), torch.randn(2, 4)
    loha = lycoris_deltas(
        {"m.hada_w1_a": a, "m.hada_w1_b": b, "m.hada_w2_a": c, "m.hada_w2_b": d, "m.alpha": torch.tensor(4.0)}
    )
    torch.testing.assert_close(loha["m"], (a @ b) * (c @ d) * 2.0)
    w1, w2a, w2b = torch.randn(2, 2), torch.randn(3, 1), torch.randn(1, 2)
    lokr = lycoris_deltas(
        {"m.lokr_w1": w1, "m.lokr_w2_a": w2a, "m.lokr_w2_b": w2b, "m.alpha": torch.tensor(3.0)}
    )
    expected = torch.stack(
        [torch.cat([w1[i, j] * (w2a @ w2b) for j in range(2)], 1) for i in range(2)]
    ).flatten(0, 1)
    torch.testing.assert_close(lokr["m"], expected * 3.0)
    # Both factors whole: the loaders apply no alpha, so PEFT's alpha / rank goes into w1.
    whole = peft_to_lycoris({"m.lokr_w1": w1, "m.lokr_w2": w2a @ w2b}, alpha=8.0, rank=4)
    assert "lora_unet_m.alpha" not in whole
    torch.testing.assert_close(lycoris_deltas(whole)["lora_unet_m"], torch.kron(w1, w2a @ w2b) * 2.0)


def test_oft_block_size_that_does_not_divide_a_layer_is_one_line(tiny_model_dir):
    from trainer.engine.data import load_components

    adapter = make_method(build_config("oft", model=str(tiny_model_dir), block_size=5))
    with pytest.raises(
        UserInputError, match="--block-size 5 does not divide the input width 32 of down_blocks"
    ):
        adapter.setup(load_components(str(tiny_model_dir)))


@pytest.mark.parametrize(
    ("method", "options", "message"),
    [
        ("loha", {"rank": 0}, "--rank must be a positive integer"),
        ("lokr", {"factor": 0}, "--factor must be -1 or a positive integer"),
        ("oft", {"block_size": 0}, "--block-size must be a positive integer"),
        ("loha", {"module_dropout": 1.0}, r"--module-dropout must be in \[0, 1\)"),
        ("lokr", {"alpha": -1.0}, "--alpha must be a positive number"),
        ("loha", {"dropout": 0.1}, "unknown loha option"),
    ],
)
def test_bad_method_options_are_one_line(method, options, message):
    with pytest.raises(UserInputError, match=message):
        build_config(method, **options)


def test_the_loop_names_no_method():
    """Methods are registered objects behind `Method`: the loop's code (docstrings aside) names none of them."""
    import ast
    import inspect

    from trainer.engine import loop

    tree = ast.parse(inspect.getsource(loop))
    words = {node.id for node in ast.walk(tree) if isinstance(node, ast.Name)}
    words |= {node.attr for node in ast.walk(tree) if isinstance(node, ast.Attribute)}
    words |= {
        alias.name for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) for alias in node.names
    }
    docstrings = {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef)
        and ast.get_docstring(node) is not None
    }
    words |= {
        node.value
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings
    }
    names = set(METHODS) | {method.__name__ for method in METHODS.values()}
    names |= {method.config_class.__name__ for method in METHODS.values()}
    assert not {word for word in words if word.lower() in {name.lower() for name in names}}
    assert {"Method", "make_method"} <= words
