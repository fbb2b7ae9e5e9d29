"""The save-time proof costs little: one base fingerprint and one proof pipeline per run, over the frozen tensors
training holds, each content proven once; and it still refuses every bad file and leaves best/ and last/ alone."""

import os
import shutil

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from peftlab.errors import UserInputError
from trainer.engine import export
from trainer.engine.config import build_config
from trainer.engine.methods import KOHYA_WEIGHTS, LORA_WEIGHTS, TI_WEIGHTS, make_method
from trainer.engine.proof import LoadProof, trained_lora_deltas

TARGETS = "to_q,to_k,to_v,to_out.0,proj_in,proj_out"


@pytest.fixture
def hashes(monkeypatch) -> list:
    """Every weights hash computed, by folder, with the process's fingerprint cache emptied first."""
    calls = []
    real = export.weights_sha256
    monkeypatch.setattr(export, "_FINGERPRINTS", {})
    monkeypatch.setattr(export, "weights_sha256", lambda folder: calls.append(folder.name) or real(folder))
    return calls


@pytest.fixture
def no_pipeline_from_disk(monkeypatch):
    """Fail any proof that would load a second copy of the base model from disk."""
    from diffusers import StableDiffusionPipeline

    def refuse(*args, **kwargs):
        raise AssertionError("the proof loaded the base model from disk")

    monkeypatch.setattr(StableDiffusionPipeline, "from_pretrained", refuse)


def lora_run(model, rank: int = 4):
    """A LoRA method set up on `model`'s components, its adapter filled with random non-zero weights."""
    from trainer.engine.data import load_components

    method = make_method(build_config("lora", model=str(model), target_modules=TARGETS, rank=rank, alpha=8.0))
    parts = load_components(str(model))
    method.setup(parts)
    torch.manual_seed(0)
    with torch.no_grad():
        for name, parameter in parts.unet.named_parameters():
            if "lora_" in name:
                parameter.normal_()
    return method, parts


def test_one_pipeline_per_run_over_the_training_tensors(tiny_model_dir, tmp_path, no_pipeline_from_disk):
    method, parts = lora_run(tiny_model_dir)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    method.save(parts.unet, tmp_path / "a")
    pipe = method.proof.pipe
    with torch.no_grad():
        next(p for n, p in parts.unet.named_parameters() if "lora_B" in n).mul_(3)  # the next epoch's weights
    method.save(parts.unet, tmp_path / "b")
    assert method.proof.pipe is pipe
    assert load_file(tmp_path / "a" / LORA_WEIGHTS).keys() == load_file(tmp_path / "b" / LORA_WEIGHTS).keys()
    # The proof's UNet holds the very storage of the training UNet's frozen weights, and no adapter of its own.
    training = {name.replace(".base_layer.", "."): p for name, p in parts.unet.named_parameters()}
    proof = {name.replace(".base_layer.", "."): p for name, p in pipe.unet.named_parameters()}
    assert proof.keys() == {name for name in training if ".lora_" not in name}
    assert all(proof[name].data_ptr() == training[name].data_ptr() for name in proof)
    # The training UNet still carries exactly its own adapter.
    assert parts.unet.active_adapters() == ["default"]


def test_ti_proof_shares_the_text_encoder_and_loads_the_token_as_users_do(
    tiny_model_dir, tmp_path, no_pipeline_from_disk
):
    from trainer.engine.data import load_components

    method = make_method(
        build_config("ti", model=str(tiny_model_dir), placeholder_token="<zz>", initializer_token="style")
    )
    parts = load_components(str(tiny_model_dir))
    method.setup(parts)
    with torch.no_grad():
        parts.text_encoder.get_input_embeddings().rows.normal_()
    assert method.save(parts.text_model, tmp_path)[0] == TI_WEIGHTS
    pipe = method.proof.pipe
    assert "<zz>" not in pipe.tokenizer.get_vocab()  # unloaded again, and never the training tokenizer's
    # The rows the loader adds start as anything (the file's vectors replace them), not as a costly fit.
    assert pipe.text_encoder.resize_token_embeddings.keywords == {"mean_resizing": False}
    frozen = parts.text_encoder.get_input_embeddings().table.weight
    layer = "encoder.layers.0.mlp.fc1.weight"
    assert dict(pipe.text_encoder.named_parameters())[layer].data_ptr() == (
        dict(parts.text_encoder.named_parameters())[layer].data_ptr()
    )
    assert pipe.text_encoder.get_input_embeddings().weight.shape[0] == frozen.shape[0] - 1
    learned = method.learned(parts.text_encoder)
    torch.save({"<zz>": learned * 2}, tmp_path / "altered.bin")
    with pytest.raises(UserInputError, match="altered.bin did not load back: the vectors of '<zz>' differ"):
        method.proof.textual_inversion(tmp_path / "altered.bin", "<zz>", learned)
    assert method.proof.pipe is pipe


def test_the_kept_pipeline_refuses_a_lost_or_altered_module_that_does_not_sort_first(
    tiny_model_dir, tmp_path, no_pipeline_from_disk
):
    method, parts = lora_run(tiny_model_dir)
    method.save(parts.unet, tmp_path)
    pipe = method.proof.pipe
    expected = trained_lora_deltas(parts.unet, 2.0)
    middle = sorted(expected)[len(expected) // 2]
    assert middle != sorted(expected)[0]
    state = load_file(tmp_path / LORA_WEIGHTS)
    with safe_open(tmp_path / LORA_WEIGHTS, framework="pt") as handle:
        header = handle.metadata()
    for case in ("lost", "altered", "good"):
        (tmp_path / case).mkdir()
    save_file(
        {key: value for key, value in state.items() if f".{middle}." not in key},
        tmp_path / "lost" / LORA_WEIGHTS,
        metadata=header,
    )
    (up,) = [key for key in state if key.startswith(f"unet.{middle}.") and "lora_B" in key]
    save_file(dict(state) | {up: state[up] * 2}, tmp_path / "altered" / LORA_WEIGHTS, metadata=header)
    shutil.copyfile(tmp_path / LORA_WEIGHTS, tmp_path / "good" / LORA_WEIGHTS)
    with pytest.raises(UserInputError, match=rf"lost/{LORA_WEIGHTS} did not load back: 1 of {len(expected)}"):
        method.proof.lora(tmp_path / "lost" / LORA_WEIGHTS, expected)
    with pytest.raises(UserInputError, match=f"module {middle} differs from the trained weights"):
        method.proof.lora(tmp_path / "altered" / LORA_WEIGHTS, expected)
    kohya = load_file(tmp_path / KOHYA_WEIGHTS)
    name = sorted(key.removesuffix(".alpha") for key in kohya if key.endswith(".alpha"))[len(expected) // 2]
    save_file(kohya | {f"{name}.alpha": kohya[f"{name}.alpha"] * 2}, tmp_path / "altered.safetensors")
    with pytest.raises(UserInputError, match=f"module {name} differs from the trained weights"):
        method.proof.kohya(tmp_path / "altered.safetensors", expected)
    # A refused file leaves nothing behind in the kept pipeline: the good file still proves.
    method.proof.lora(tmp_path / "good" / LORA_WEIGHTS, expected)
    assert method.proof.pipe is pipe


def test_half_precision_runs_prove_in_float32(tiny_model_dir, tmp_path):
    """PEFT rounds a loaded adapter to its base's dtype: over a bf16 UNet the proof loads its own float32 copy."""
    from trainer.engine.data import load_components

    method = make_method(build_config("lora", model=str(tiny_model_dir), target_modules=TARGETS))
    parts = load_components(str(tiny_model_dir), torch.bfloat16)
    method.setup(parts)
    method.save(parts.unet, tmp_path)
    assert method.proof.pipe.unet.dtype == torch.float32


def test_the_base_model_is_hashed_once_until_its_files_change(tiny_model_dir, tmp_path, hashes):
    model = tmp_path / "model"
    shutil.copytree(tiny_model_dir, model)
    first = export.base_model_fingerprint(str(model))
    for _ in range(2):  # two more runs of one process (a worker) on the same model
        assert make_method(build_config("lora", model=str(model))).base_model == first
    assert sorted(hashes) == ["text_encoder", "unet"]
    weights = next((model / "unet").glob("*.safetensors"))
    stamp = weights.stat()
    os.utime(weights, ns=(stamp.st_atime_ns, stamp.st_mtime_ns + 1_000_000_000))
    assert export.base_model_fingerprint(str(model)) == first  # same bytes, hashed again
    assert sorted(hashes) == ["text_encoder", "text_encoder", "unet", "unet"]


@pytest.mark.slow
def test_a_failed_proof_mid_run_keeps_best_and_last_with_one_pipeline(
    tmp_path, prepared_dir, fast_options, monkeypatch, script_validation, hashes
):
    """Epoch 2 improves, and its kohya file loses a module that does not sort first: the run stops with the
    proof's line, best/ and last/ keep epoch 1's bytes, and the run built one pipeline and hashed the base once."""
    from trainer.engine import lora_formats
    from trainer.engine.loop import train

    built = []
    shared = LoadProof.shared_pipeline
    monkeypatch.setattr(LoadProof, "shared_pipeline", lambda self: built.append(self) or shared(self))
    proofs = []
    prove = LoadProof.lora
    monkeypatch.setattr(
        LoadProof, "lora", lambda self, path, expected: proofs.append(path) or prove(self, path, expected)
    )
    convert, saves = lora_formats.diffusers_to_kohya, []

    def lossy(state, alpha, family):
        kohya = convert(state, alpha, family)
        saves.append(1)
        if len(saves) == 2:
            names = sorted({key.split(".")[0] for key in kohya})
            kohya = {key: value for key, value in kohya.items() if not key.startswith(f"{names[1]}.")}
        return kohya

    monkeypatch.setattr(lora_formats, "diffusers_to_kohya", lossy)
    script_validation([1.0, 0.9, 0.8])
    snapshot = {}

    def keep(result):
        for folder in ("best", "last"):
            snapshot[folder] = {
                path.name: path.read_bytes() for path in (tmp_path / "out" / folder).iterdir()
            }

    config = build_config("lora", **fast_options)
    with pytest.raises(UserInputError, match=r"lora_kohya.safetensors did not load back: 1 of \d+ trained"):
        train(prepared_dir, tmp_path / "out", config, on_epoch=keep)
    for folder in ("best", "last"):
        assert {path.name: path.read_bytes() for path in (tmp_path / "out" / folder).iterdir()} == snapshot[
            folder
        ]
    assert snapshot["best"] == snapshot["last"]
    # Epoch 1 proved best/ (two loads); last/ was a copy, not proven again; epoch 2's kohya file failed parsing.
    assert [path.name for path in proofs] == [LORA_WEIGHTS, KOHYA_WEIGHTS, LORA_WEIGHTS]
    assert len(built) == 1
    assert sorted(hashes) == ["text_encoder", "unet"]
    assert not list((tmp_path / "out").glob(".*staging"))
