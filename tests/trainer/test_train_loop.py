"""The shared loop: a reproducible validation loss, resume after a kill, refused config changes."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from peftlab.errors import UserInputError
from peftlab.progress import Progress
from trainer.engine.config import build_config
from trainer.engine.dataset import read_split
from trainer.engine.loop import train as engine_train
from trainer.models import TrainingRun
from trainer.services import training_run_create, training_run_execute

pytestmark = [pytest.mark.slow, pytest.mark.django_db]


class Killed(Exception):
    """Stands in for SIGKILL: the run stops right after the checkpoint of epoch 1."""


def kill_after_first_epoch(report: Progress) -> None:
    if report.stage == "epoch" and report.done == 1:
        raise Killed


@pytest.fixture(scope="module")
def config(fast_options):
    # Dropout and Min-SNR make the result depend on every RNG the checkpoint must restore.
    return build_config("lora", **fast_options, dropout=0.1, snr_gamma=5.0, learning_rate=1e-3)


@pytest.fixture(scope="module")
def reference(tmp_path_factory, prepared_dir, config):
    """An uninterrupted run (engine only): its folder and the trained epochs' validation losses."""
    output = tmp_path_factory.mktemp("reference") / "out"
    result = engine_train(prepared_dir, output, config)
    return output, [epoch.val_loss for epoch in result.epochs if epoch.epoch]


def train(prepared_dir, output, config, resume=False, progress=None):
    run = training_run_create(
        method="lora", dataset_dir=prepared_dir, output=output, config=config, resume=resume
    )
    return training_run_execute(run=run, **({"progress": progress} if progress else {}))


def test_validation_loss_is_identical_across_runs_with_the_same_seed(
    tmp_path, prepared_dir, config, reference
):
    again = train(prepared_dir, tmp_path / "again", config)
    _, expected = reference
    assert len(expected) == 2
    assert list(again.epochs.values_list("val_loss", flat=True)) == expected


def test_killed_run_resumes_to_the_uninterrupted_result(tmp_path, prepared_dir, config, reference):
    killed_output = tmp_path / "killed"
    with pytest.raises(Killed):
        train(prepared_dir, killed_output, config, progress=kill_after_first_epoch)
    killed = TrainingRun.objects.get(output_path=str(killed_output.resolve()))
    assert killed.status == TrainingRun.Status.FAILED and killed.epochs.count() == 1
    assert torch.load(killed_output / "checkpoint.pt", weights_only=False)["epochs_done"] == 1

    resumed = train(prepared_dir, killed_output, config, resume=True)
    assert resumed.status == TrainingRun.Status.FINISHED
    assert list(resumed.epochs.values_list("epoch", flat=True)) == [1, 2]
    reference_output, reference_losses = reference
    expected = load_file(reference_output / "last" / "pytorch_lora_weights.safetensors")
    actual = load_file(killed_output / "last" / "pytorch_lora_weights.safetensors")
    assert expected.keys() == actual.keys()
    assert all(torch.equal(expected[key], actual[key]) for key in expected)
    assert list(resumed.epochs.values_list("val_loss", flat=True)) == reference_losses


def test_resume_with_another_config_is_refused(tmp_path, prepared_dir, config, fast_options):
    with pytest.raises(Killed):
        train(prepared_dir, tmp_path / "out", config, progress=kill_after_first_epoch)
    changed = build_config("lora", **fast_options, dropout=0.1, snr_gamma=5.0, learning_rate=2e-3)
    with pytest.raises(UserInputError, match="learning_rate"):
        train(prepared_dir, tmp_path / "out", changed, resume=True)
    with pytest.raises(UserInputError, match="already holds a run"):
        train(prepared_dir, tmp_path / "out", config)


def test_resume_of_a_checkpoint_scored_on_other_validation_pairs_is_refused(tmp_path, prepared_dir, config):
    with pytest.raises(Killed):
        train(prepared_dir, tmp_path / "out", config, progress=kill_after_first_epoch)
    checkpoint = tmp_path / "out" / "checkpoint.pt"
    state = torch.load(checkpoint, weights_only=False)
    assert state["validation_pairs"] == [[0, 1, 0, 1, 0, 1, 0, 1, 0, 1], list(range(0, 1000, 111))]
    # As a peftlab from before the paired validation wrote it: no pairs recorded (its losses crossed them).
    del state["validation_pairs"]
    torch.save(state, checkpoint)
    written = checkpoint.read_bytes()
    with pytest.raises(UserInputError, match=r"other \(image, timestep\) pairs .* train into a new --output"):
        train(prepared_dir, tmp_path / "out", config, resume=True)
    assert checkpoint.read_bytes() == written  # refused before anything is touched


def test_latent_cache_is_reused_by_later_runs(tmp_path, prepared_dir, fast_options):
    cache = tmp_path / "cache"
    config = build_config("lora", **{**fast_options, "epochs": 1}, cache_dir=str(cache))
    train(prepared_dir, tmp_path / "a", config)
    entries = {path: path.stat().st_mtime_ns for path in cache.rglob("*.safetensors")}
    captions = {
        caption for split in ("train.txt", "validation.txt") for _, caption in read_split(prepared_dir, split)
    }
    assert len(entries) == 6 + len(captions)  # latents of the 6 images, text states of each distinct caption
    train(prepared_dir, tmp_path / "b", config)
    assert {path: path.stat().st_mtime_ns for path in cache.rglob("*.safetensors")} == entries


def test_bf16_with_gradient_checkpointing_in_a_process_of_its_own(tmp_path, prepared_dir, fast_options):
    # A process of its own: Accelerate keeps one precision per process, and this one trains in float32.
    options = {**fast_options, "epochs": 1, "mixed_precision": "bf16", "gradient_checkpointing": True}
    options.update(placeholder_token="<gv>", initializer_token="style")
    script = (
        "import json, math, sys; from pathlib import Path; from trainer.engine.config import build_config; "
        "from trainer.engine.loop import train; "
        "result = train(Path(sys.argv[1]), Path(sys.argv[2]), build_config('ti', **json.loads(sys.argv[3]))); "
        "assert math.isfinite(result.best_val_loss)"
    )
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    subprocess.run(
        [sys.executable, "-c", script, str(prepared_dir), str(tmp_path / "bf16"), json.dumps(options)],
        env=env,
        check=True,
        capture_output=True,
    )
    assert load_file(tmp_path / "bf16" / "learned_embeds.safetensors")["<gv>"].dtype == torch.float32


def test_early_stopping_keeps_the_best_epoch_and_stays_stopped_on_resume(
    tmp_path, prepared_dir, fast_options, script_validation
):
    script_validation([1.0, 0.8, 0.9, 0.7, 0.6])  # epoch 2 is worse than epoch 1; 3 and 4 would be better
    options = {**fast_options, "epochs": 4, "learning_rate": 5e-2, "early_stopping_patience": 1}
    config = build_config("ti", **options, placeholder_token="<gv>", initializer_token="style")
    result = engine_train(prepared_dir, tmp_path / "out", config)
    assert result.stopped_early
    assert [epoch.epoch for epoch in result.epochs] == [0, 1, 2]
    assert result.best_epoch == 1
    best = load_file(tmp_path / "out" / "best" / "learned_embeds.safetensors")
    assert torch.equal(load_file(tmp_path / "out" / "learned_embeds.safetensors")["<gv>"], best["<gv>"])
    resumed = engine_train(prepared_dir, tmp_path / "out", config, resume=True)
    assert resumed.stopped_early and len(resumed.epochs) == len(result.epochs)


def test_sigkilled_process_resumes_to_the_uninterrupted_result(tmp_path, prepared_dir, fast_options):
    options = {**fast_options, "epochs": 8, "learning_rate": 1e-3}
    killed = tmp_path / "killed"
    script = (
        "import json, sys; from pathlib import Path; from trainer.engine.config import build_config; "
        "from trainer.engine.loop import train; "
        "train(Path(sys.argv[1]), Path(sys.argv[2]), build_config('lora', **json.loads(sys.argv[3])))"
    )
    # The same CPU thread count as this process: float sums over another number of threads round differently.
    threads = str(torch.get_num_threads())
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2]), "OMP_NUM_THREADS": threads}
    process = subprocess.Popen(
        [sys.executable, "-c", script, str(prepared_dir), str(killed), json.dumps(options)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 300
    while not (killed / "checkpoint.pt").exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()
    done = torch.load(killed / "checkpoint.pt", weights_only=False)["epochs_done"]
    assert 0 < done < options["epochs"]  # killed mid-run, after a checkpoint

    resumed = engine_train(prepared_dir, killed, build_config("lora", **options), resume=True)
    reference = engine_train(prepared_dir, tmp_path / "reference", build_config("lora", **options))
    assert [epoch.val_loss for epoch in resumed.epochs] == [epoch.val_loss for epoch in reference.epochs]
    expected = load_file(tmp_path / "reference" / "last" / "pytorch_lora_weights.safetensors")
    actual = load_file(killed / "last" / "pytorch_lora_weights.safetensors")
    assert all(torch.equal(expected[key], actual[key]) for key in expected)
    assert not list(killed.glob(".*"))  # no temporary or staging leftovers
