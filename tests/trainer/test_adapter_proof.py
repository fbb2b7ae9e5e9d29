"""Save, then prove the load: every written adapter file loads back into stock diffusers as it was trained."""

import json
import os
import stat

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from peftlab.errors import UserInputError
from trainer.engine.config import build_config
from trainer.engine.methods import KOHYA_WEIGHTS, LORA_WEIGHTS, TI_WEIGHTS, make_method
from trainer.engine.proof import LoadProof, trained_lora_deltas

TARGET_CHOICES = [
    "to_q,to_k,to_v,to_out.0",
    "to_q,to_k,to_v,to_out.0,proj_in,proj_out",
    "to_q,to_v,ff.net.0.proj,ff.net.2,proj_in,proj_out",
]


def lora_method_with_weights(tiny_model_dir, targets: str, rank: int = 4, alpha: float = 8.0):
    """A LoRA method set up on the tiny UNet, its adapter filled with random non-zero weights."""
    from trainer.engine.data import load_components

    method = make_method(
        build_config("lora", model=str(tiny_model_dir), target_modules=targets, rank=rank, alpha=alpha)
    )
    parts = load_components(str(tiny_model_dir))
    method.setup(parts)
    torch.manual_seed(0)
    with torch.no_grad():
        for name, parameter in parts.unet.named_parameters():
            if "lora_" in name:
                parameter.normal_()
    return method, parts.unet


@pytest.mark.parametrize("targets", TARGET_CHOICES)
def test_every_target_choice_loads_whole_in_stock_diffusers(tiny_model_dir, tmp_path, targets):
    from diffusers import StableDiffusionPipeline
    from peft.tuners.tuners_utils import BaseTunerLayer

    method, unet = lora_method_with_weights(tiny_model_dir, targets)
    assert method.save(unet, tmp_path) == [LORA_WEIGHTS, KOHYA_WEIGHTS]  # the proof passed
    trained = trained_lora_deltas(unet, 2.0)
    assert len(trained) >= 16
    for name in (LORA_WEIGHTS, KOHYA_WEIGHTS):
        pipe = StableDiffusionPipeline.from_pretrained(tiny_model_dir, safety_checker=None)
        pipe.load_lora_weights(tmp_path, weight_name=name)
        wrapped = [module for module in pipe.unet.modules() if isinstance(module, BaseTunerLayer)]
        assert len(wrapped) == len(trained), name
    assert {stat.S_IMODE(os.stat(tmp_path / name).st_mode) for name in (LORA_WEIGHTS, KOHYA_WEIGHTS)} == {
        0o644
    }


def test_diffusers_converter_file_with_mixed_key_names_is_refused(tiny_model_dir, tmp_path):
    """The defect: convert_state_dict_to_diffusers renames only to_q/k/v/out, so proj_in/out do not load."""
    from diffusers import StableDiffusionPipeline
    from diffusers.utils import convert_state_dict_to_diffusers
    from peft.utils import get_peft_model_state_dict

    _, unet = lora_method_with_weights(tiny_model_dir, TARGET_CHOICES[1], alpha=4.0)
    StableDiffusionPipeline.save_lora_weights(
        tmp_path, unet_lora_layers=convert_state_dict_to_diffusers(get_peft_model_state_dict(unet))
    )
    with pytest.raises(
        UserInputError, match=r"did not load back: \d+ of \d+ trained LoRA modules are missing"
    ):
        LoadProof(str(tiny_model_dir)).lora(tmp_path / LORA_WEIGHTS, trained_lora_deltas(unet, 1.0))


def test_kohya_file_with_a_lost_or_altered_module_is_refused(tiny_model_dir, tmp_path):
    method, unet = lora_method_with_weights(tiny_model_dir, TARGET_CHOICES[1])
    method.save(unet, tmp_path)
    expected = trained_lora_deltas(unet, 2.0)
    kohya = load_file(tmp_path / KOHYA_WEIGHTS)
    proof = LoadProof(str(tiny_model_dir))
    lost = {key: value for key, value in kohya.items() if "proj_out" not in key}
    save_file(lost, tmp_path / "lost.safetensors")
    with pytest.raises(UserInputError, match="lost.safetensors did not load back: 4 of 40 trained"):
        proof.kohya(tmp_path / "lost.safetensors", expected)
    altered = dict(kohya)
    name = "lora_unet_down_blocks_0_attentions_0_proj_in"
    altered[f"{name}.alpha"] = altered[f"{name}.alpha"] * 2
    save_file(altered, tmp_path / "altered.safetensors")
    with pytest.raises(UserInputError, match=f"module {name} differs from the trained weights"):
        proof.kohya(tmp_path / "altered.safetensors", expected)


def test_lora_files_carry_the_base_model_and_kohya_header(tiny_model_dir, tmp_path):
    from trainer.engine.export import weights_sha256

    method, unet = lora_method_with_weights(tiny_model_dir, TARGET_CHOICES[0])
    method.save(unet, tmp_path)
    unet_sha = weights_sha256(tiny_model_dir / "unet")
    with safe_open(tmp_path / KOHYA_WEIGHTS, framework="pt") as handle:
        kohya = handle.metadata()
    assert kohya["ss_network_module"] == "networks.lora" and kohya["ss_base_model_version"] == "sd_v1"
    assert kohya["ss_sd_model_name"] == tiny_model_dir.name and kohya["ss_network_alpha"] == "8.0"
    assert kohya["base_unet_sha256"] == unet_sha
    with safe_open(tmp_path / LORA_WEIGHTS, framework="pt") as handle:
        diffusers = handle.metadata()
    assert json.loads(diffusers["lora_adapter_metadata"])["unet.base_model_name_or_path"] == str(
        tiny_model_dir
    )
    assert diffusers["base_unet_sha256"] == unet_sha and len(diffusers["base_text_encoder_sha256"]) == 64


def test_ti_files_load_back_and_a_changed_vector_is_refused(tiny_model_dir, tmp_path):
    from trainer.engine.data import load_components

    method = make_method(
        build_config(
            "ti",
            model=str(tiny_model_dir),
            placeholder_token="<proof>",
            initializer_token="style",
            num_vectors=2,
        )
    )
    parts = load_components(str(tiny_model_dir))
    method.setup(parts)
    with torch.no_grad():
        parts.text_encoder.get_input_embeddings().weight[method.token_ids] += 1.0
    names = method.save(parts.text_model, tmp_path)
    assert names == [TI_WEIGHTS, "proof.safetensors"]
    with safe_open(tmp_path / TI_WEIGHTS, framework="pt") as handle:
        assert handle.metadata()["initializer_token"] == "style"
    learned = method.learned(parts.text_encoder)
    save_file({"<proof>": learned * 0.5}, tmp_path / "changed.safetensors")
    with pytest.raises(
        UserInputError, match="changed.safetensors did not load back: the vectors of '<proof>'"
    ):
        LoadProof(str(tiny_model_dir)).textual_inversion(tmp_path / "changed.safetensors", "<proof>", learned)


def test_proof_compares_every_module_not_only_the_first(tiny_model_dir, tmp_path):
    """The module altered sorts last: a proof that stopped after the first module would pass it."""
    method, unet = lora_method_with_weights(tiny_model_dir, TARGET_CHOICES[1])
    method.save(unet, tmp_path)
    expected = trained_lora_deltas(unet, 2.0)
    last = sorted(expected)[-1]
    assert last != sorted(expected)[0]
    proof = LoadProof(str(tiny_model_dir))
    state = load_file(tmp_path / LORA_WEIGHTS)
    (up,) = [key for key in state if key.startswith(f"unet.{last}.") and "lora_B" in key]
    altered = dict(state) | {up: state[up] * 2}
    (tmp_path / "altered").mkdir()
    with safe_open(tmp_path / LORA_WEIGHTS, framework="pt") as handle:
        header = handle.metadata()  # alpha travels in it
    save_file(altered, tmp_path / "altered" / LORA_WEIGHTS, metadata=header)
    with pytest.raises(UserInputError, match=f"module {last} differs from the trained weights"):
        proof.lora(tmp_path / "altered" / LORA_WEIGHTS, expected)
    kohya = load_file(tmp_path / KOHYA_WEIGHTS)
    name = sorted(key.removesuffix(".alpha") for key in kohya if key.endswith(".alpha"))[-1]
    kohya[f"{name}.alpha"] = kohya[f"{name}.alpha"] * 2
    save_file(kohya, tmp_path / "altered.safetensors")
    with pytest.raises(UserInputError, match=f"module {name} differs from the trained weights"):
        proof.kohya(tmp_path / "altered.safetensors", expected)


def test_proof_refuses_a_file_that_leaves_a_matrix_unloaded(tiny_model_dir, tmp_path):
    """Without one module's lora_B, stock loading leaves it on the meta device and raises nothing."""
    method, unet = lora_method_with_weights(tiny_model_dir, TARGET_CHOICES[0])
    method.save(unet, tmp_path)
    state = load_file(tmp_path / LORA_WEIGHTS)
    last_up = sorted(key for key in state if "lora_B" in key)[-1]
    (tmp_path / "half").mkdir()
    save_file(
        {key: value for key, value in state.items() if key != last_up}, tmp_path / "half" / LORA_WEIGHTS
    )
    with pytest.raises(UserInputError, match=r"left unet\..*lora_B\.peftlab_proof\.weight without values"):
        LoadProof(str(tiny_model_dir)).lora(tmp_path / "half" / LORA_WEIGHTS, trained_lora_deltas(unet, 2.0))
