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
        assert make_method(build_config("lora", model=str(model))).base_model == first | {
            "base_model_family": "sd15"
        }
    assert sorted(hashes) == ["text_encoder", "unet"]
    weights = next((model / "unet").glob("*.safetensors"))
    stamp = weights.stat()
    os.utime(weights, ns=(stamp.st_atime_ns, stamp.st_mtime_ns + 1_000_000_000))
    assert export.base_model_fingerprint(str(model)) == first  # same bytes, hashed again
    assert sorted(hashes) == ["text_encoder", "text_encoder", "unet", "unet"]


@pytest.mark.slow
@pytest.mark.parametrize(
    ("background", "fault"),
    [(False, "lost"), (True, "lost"), (True, "altered")],
    ids=["inline", "bg-lost", "bg-altered"],
)
def test_a_failed_proof_mid_run_keeps_best_and_last_with_one_pipeline(
    tmp_path, prepared_dir, fast_options, monkeypatch, script_validation, hashes, background, fault
):
    """Epoch 2 improves, and its kohya file loses (or alters) a module that does not sort first: the run stops
    with the proof's line, best/ and last/ keep epoch 1's bytes, the checkpoint stays at epoch 1, and the run
    built one pipeline and hashed the base once. In the background, epoch 2's save fails while epoch 3 trains
    and stops the run at epoch 3's save."""
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
    convert, saves, snapshot = lora_formats.diffusers_to_kohya, [], {}

    def faulty(state, alpha, family):
        kohya = convert(state, alpha, family)
        saves.append(1)
        if len(saves) == 2:
            # What epoch 1's save left, as epoch 2's save writes its files.
            for folder in ("best", "last"):
                snapshot[folder] = {
                    path.name: path.read_bytes() for path in (tmp_path / "out" / folder).iterdir()
                }
            name = sorted({key.split(".")[0] for key in kohya})[1]
            if fault == "lost":
                kohya = {key: value for key, value in kohya.items() if not key.startswith(f"{name}.")}
            else:
                kohya[f"{name}.lora_up.weight"] = kohya[f"{name}.lora_up.weight"] * 2
        return kohya

    monkeypatch.setattr(lora_formats, "diffusers_to_kohya", faulty)
    script_validation([1.0, 0.9, 0.8, 0.7])
    config = build_config("lora", **{**fast_options, "epochs": 3}, background_saves=background)
    message = r"1 of \d+ trained" if fault == "lost" else r"module .* differs from the trained weights"
    with pytest.raises(UserInputError, match=rf"lora_kohya.safetensors did not load back: {message}"):
        train(prepared_dir, tmp_path / "out", config)
    for folder in ("best", "last"):
        assert {path.name: path.read_bytes() for path in (tmp_path / "out" / folder).iterdir()} == snapshot[
            folder
        ]
    assert snapshot["best"] == snapshot["last"]
    assert torch.load(tmp_path / "out" / "checkpoint.pt", weights_only=False)["epochs_done"] == 1
    # Epoch 1 proved best/ (two loads); last/ was a copy, not proven again; epoch 2's kohya file failed parsing.
    assert [path.name for path in proofs] == [LORA_WEIGHTS, KOHYA_WEIGHTS, LORA_WEIGHTS]
    assert len(saves) == 2  # nothing saved after the failed save
    assert len(built) == 1
    assert sorted(hashes) == ["text_encoder", "unet"]
    assert not list((tmp_path / "out").glob(".*staging"))


def test_draws_nothing_fills_what_loaders_start_at_random_with_nan_and_refuses_other_draws():
    from trainer.engine.proof import DrawsNothing, ProofDrewRandomNumbers

    state = torch.get_rng_state()
    with DrawsNothing():
        assert torch.nn.Embedding(4, 2).weight.isnan().all()
        assert torch.empty(3).uniform_().isnan().all()
        with pytest.raises(ProofDrewRandomNumbers, match="called randn"):
            torch.randn(2)
    assert torch.equal(torch.get_rng_state(), state)
    assert not torch.nn.Embedding(4, 2).weight.isnan().any()  # on this thread, only inside the block


def training_draws_meanwhile(monkeypatch, loader: str) -> list:
    """Make the stock `loader` wait while another thread draws 7 numbers, as training does while a background
    proof loads; return the list of those draws."""
    import threading

    from diffusers import StableDiffusionPipeline

    draws, real = [], getattr(StableDiffusionPipeline, loader)

    def loading(*args, **kwargs):
        thread = threading.Thread(target=lambda: draws.append(torch.randn(7)))
        thread.start()
        thread.join()
        return real(*args, **kwargs)

    monkeypatch.setattr(StableDiffusionPipeline, loader, loading)
    return draws


def generator_after(start: torch.Tensor, draws: int) -> torch.Tensor:
    """The global generator's state after `draws` draws of 7 numbers from `start` (the state is restored)."""
    torch.set_rng_state(start)
    for _ in range(draws):
        torch.randn(7)
    state = torch.get_rng_state()
    torch.set_rng_state(start)
    return state


def test_a_proof_keeps_the_draws_training_makes_meanwhile_and_draws_nothing(
    tiny_model_dir, tmp_path, monkeypatch
):
    """On a background thread the proof runs while training draws from the same global generator: fork_rng
    would rewind those draws at its end, and a proof's own draws would shift them; neither happens."""
    method, parts = lora_run(tiny_model_dir)
    method.save(parts.unet, tmp_path)  # the pipeline is built
    expected = trained_lora_deltas(parts.unet, 2.0)
    draws = training_draws_meanwhile(monkeypatch, "load_lora_weights")
    start = torch.get_rng_state()
    method.proof.lora(tmp_path / LORA_WEIGHTS, expected)
    method.proof.kohya(tmp_path / KOHYA_WEIGHTS, expected)
    assert len(draws) == 2 and torch.equal(torch.get_rng_state(), generator_after(start, 2))

    from trainer.engine.data import load_components

    ti = make_method(
        build_config("ti", model=str(tiny_model_dir), placeholder_token="<zz>", initializer_token="style")
    )
    parts = load_components(str(tiny_model_dir))
    ti.setup(parts)
    ti.save(parts.text_model, tmp_path)
    learned = ti.learned(parts.text_encoder)
    draws = training_draws_meanwhile(monkeypatch, "load_textual_inversion")
    start = torch.get_rng_state()
    ti.proof.textual_inversion(tmp_path / TI_WEIGHTS, "<zz>", learned)
    assert len(draws) == 1 and torch.equal(torch.get_rng_state(), generator_after(start, 1))


def test_proofs_never_write_the_frozen_tensors_training_shares(tiny_model_dir, tmp_path):
    """The proof pipeline holds the training's frozen tensors while the next epoch trains on them: loading,
    refusing and unloading LoRA and TI files leaves every one of them as it was."""
    from trainer.engine.data import load_components

    method, parts = lora_run(tiny_model_dir)
    ti = make_method(
        build_config("ti", model=str(tiny_model_dir), placeholder_token="<zz>", initializer_token="style")
    )
    ti_parts = load_components(str(tiny_model_dir))
    ti.setup(ti_parts)

    def frozen() -> dict:
        return {
            f"{label}.{name}": tensor.clone()
            for label, module in (("unet", parts.unet), ("text", ti_parts.text_encoder), ("vae", parts.vae))
            for name, tensor in module.state_dict().items()
            if ".lora_" not in name and not name.endswith(".rows")
        }

    before = frozen()
    method.save(parts.unet, tmp_path)
    expected = trained_lora_deltas(parts.unet, 2.0)
    state = load_file(tmp_path / LORA_WEIGHTS)
    with safe_open(tmp_path / LORA_WEIGHTS, framework="pt") as handle:
        header = handle.metadata()
    (tmp_path / "altered").mkdir()
    save_file(
        {key: value * 2 for key, value in state.items()}, tmp_path / "altered" / LORA_WEIGHTS, metadata=header
    )
    with pytest.raises(UserInputError, match="differs from the trained weights"):
        method.proof.lora(tmp_path / "altered" / LORA_WEIGHTS, expected)
    ti.save(ti_parts.text_model, tmp_path)
    learned = ti.learned(ti_parts.text_encoder)
    torch.save({"<zz>": learned * 2}, tmp_path / "altered.bin")
    with pytest.raises(UserInputError, match="the vectors of '<zz>' differ"):
        ti.proof.textual_inversion(tmp_path / "altered.bin", "<zz>", learned)
    after = frozen()
    assert after.keys() == before.keys()
    assert [name for name in before if not torch.equal(before[name], after[name])] == []


def test_a_background_save_saves_from_a_snapshot_of_the_trainable_tensors_over_the_shared_frozen_ones(
    tiny_model_dir, tmp_path
):
    """The snapshot shares every frozen tensor and copies the trainable ones at `take()`: the next step's
    changes do not reach the files a background save is writing."""
    from trainer.engine.saving import TrainedSnapshot

    method, parts = lora_run(tiny_model_dir)
    snapshot = TrainedSnapshot(parts.unet)
    taken = snapshot.take()
    trained = dict(parts.unet.named_parameters())
    copied = dict(taken.named_parameters())
    assert copied.keys() == trained.keys()
    for name, parameter in trained.items():
        shared = copied[name].data_ptr() == parameter.data_ptr()
        assert shared != parameter.requires_grad, name  # frozen: the same storage; trainable: a copy
        assert torch.equal(copied[name], parameter)
    expected = trained_lora_deltas(parts.unet, 2.0)
    with torch.no_grad():
        for parameter in parts.unet.parameters():
            if parameter.requires_grad:
                parameter.mul_(3)  # the next epoch's step
    method.save(taken, tmp_path)  # proves the snapshot's values
    assert all(torch.equal(expected[name], delta) for name, delta in trained_lora_deltas(taken, 2.0).items())
    assert snapshot.take() is taken
    assert all(torch.equal(copied[name], trained[name]) for name in trained)  # refreshed
