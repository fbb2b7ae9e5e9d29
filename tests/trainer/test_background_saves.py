"""Saves on a background thread: the same weights, losses and files as saves in line, and a failed proof
still stops the run with its one line."""

import pytest
import torch
from django.core.management import CommandError, call_command
from safetensors import safe_open
from safetensors.torch import load_file

from trainer.engine.config import build_config
from trainer.engine.loop import train
from trainer.engine.methods import LORA_WEIGHTS
from trainer.engine.proof import LoadProof
from trainer.engine.saving import BackgroundSaves

pytestmark = pytest.mark.slow

TI = {"placeholder_token": "<gv>", "initializer_token": "style", "num_vectors": 2}


@pytest.fixture
def submitted(monkeypatch) -> list:
    """The saves handed to the background thread."""
    saves, real = [], BackgroundSaves.submit
    monkeypatch.setattr(BackgroundSaves, "submit", lambda self, save: saves.append(save) or real(self, save))
    return saves


def folder_bytes(folder):
    return {path.name: path.read_bytes() for path in sorted(folder.iterdir())}


def weights_file(path):
    """A safetensors file's header metadata and tensors' bytes (its JSON header's key order varies by save)."""
    with safe_open(path, framework="pt") as handle:
        metadata = handle.metadata()
    return metadata, {key: value.numpy().tobytes() for key, value in load_file(path).items()}


def weights_files(folder):
    return {path.name: weights_file(path) for path in sorted(folder.glob("*.safetensors"))}


@pytest.mark.parametrize(
    ("method", "options"),
    [("lora", {"dropout": 0.1, "snr_gamma": 5.0}), ("ti", TI)],
    ids=["lora-dropout", "ti"],
)
def test_background_saves_train_what_saves_in_line_train(
    tmp_path, prepared_dir, fast_options, submitted, method, options
):
    """Same seed, three epochs: bit-identical losses, weights files and checkpoint. Dropout and TI's proof (which
    builds token tables) would draw from the generator training uses if the proof drew anything."""
    runs = {}
    for background in (True, False):
        config = build_config(
            method,
            **{**fast_options, "epochs": 3, "learning_rate": 1e-2},
            **options,
            background_saves=background,
        )
        result = train(prepared_dir, tmp_path / str(background), config)
        runs[background] = result
    assert len(submitted) == 2  # epochs 1 and 2 saved in the background; the last in line
    losses = {
        background: [(epoch.train_loss, epoch.val_loss) for epoch in result.epochs]
        for background, result in runs.items()
    }
    assert losses[True] == losses[False] and len(losses[True]) == 4
    assert len({loss for _, loss in losses[True]}) == 4  # training moved the losses
    assert runs[True].best_epoch == runs[False].best_epoch
    for folder in ("best", "last", ""):
        assert weights_files(tmp_path / "True" / folder) == weights_files(tmp_path / "False" / folder)
        assert len(weights_files(tmp_path / "True" / folder)) == 2
    checkpoints = [
        torch.load(tmp_path / name / "checkpoint.pt", weights_only=False) for name in ("True", "False")
    ]
    for key in ("trainable", "rng"):
        assert repr(checkpoints[0][key]) == repr(checkpoints[1][key]), key
    assert checkpoints[0]["epochs_done"] == 3


@pytest.mark.django_db
def test_a_failed_background_proof_stops_the_command_with_its_line(
    tmp_path, prepared_dir, fast_options, script_validation, submitted, monkeypatch
):
    """Epoch 2's save fails on the background thread while epoch 3 trains: the command stops with the proof's
    line and no traceback, best/ and last/ keep epoch 1's proven files and the checkpoint stays at epoch 1."""
    from peftlab.errors import UserInputError

    output = tmp_path / "out"
    proofs, kept, real = [], {}, LoadProof.lora

    def prove(self, path, expected):
        proofs.append(path)
        if len(proofs) == 3:  # epoch 1 loaded its two files; this is epoch 2's first
            kept.update({folder: folder_bytes(output / folder) for folder in ("best", "last")})
            raise UserInputError(f"{path} did not load back: module x differs from the trained weights")
        return real(self, path, expected)

    monkeypatch.setattr(LoadProof, "lora", prove)
    script_validation([1.0, 0.9, 0.8, 0.7])
    with pytest.raises(CommandError, match=rf"{LORA_WEIGHTS} did not load back: module x differs") as error:
        call_command("train_lora", data=prepared_dir, output=output, **{**fast_options, "epochs": 3})
    assert "\n" not in str(error.value)
    assert len(submitted) == 2 and len(proofs) == 3  # failed in the background; epoch 3 saved nothing
    assert {folder: folder_bytes(output / folder) for folder in ("best", "last")} == kept
    assert kept["best"] == kept["last"]
    assert torch.load(output / "checkpoint.pt", weights_only=False)["epochs_done"] == 1
    assert not list(output.glob(".*staging"))
