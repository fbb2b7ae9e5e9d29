"""`train --method` end to end on the tiny SD 1.x and SDXL models for DoRA, LoHa, LoKr and OFT: the same loop,
run.json, resume."""

import json
from io import StringIO

import pytest
import torch
from django.core.management import CommandError, call_command
from safetensors.torch import load_file

from peftlab.progress import Progress
from trainer.engine.config import build_config
from trainer.engine.families import detect_family
from trainer.engine.loop import train as engine_train
from trainer.models import TrainingRun
from trainer.selectors import training_run_adapter_files

pytestmark = [pytest.mark.slow, pytest.mark.django_db]

# Each method's weights file, and the name part of the tensors that start at zero (so that training moved them).
WEIGHTS = {
    "dora": ("pytorch_lora_weights.safetensors", "lora_B"),
    "loha": ("adapter_model.safetensors", "hada_w2_b"),
    "lokr": ("adapter_model.safetensors", "lokr_w1"),
    "oft": ("adapter_model.safetensors", "oft_R"),
}
OPTIONS = {
    "dora": {"rank": 2, "alpha": 4.0},
    "loha": {"rank": 2},
    "lokr": {"factor": 4},
    "oft": {"block_size": 8},
}


class Killed(Exception):
    """Stands in for SIGKILL: the run stops right after the checkpoint of epoch 1."""


@pytest.mark.parametrize("method", sorted(WEIGHTS))
def test_train_method_trains_records_and_proves_its_files(
    method, tmp_path, prepared_dir, fast_options, family_model_dir
):
    output = tmp_path / "out"
    stdout = StringIO()
    options = fast_options | {"model": str(family_model_dir)} | OPTIONS[method] | {"learning_rate": 1e-3}
    call_command("train", method=method, data=prepared_dir, output=output, stdout=stdout, **options)
    run = TrainingRun.objects.get(output_path=str(output.resolve()))
    assert run.status == TrainingRun.Status.FINISHED and run.method == method
    assert list(run.epochs.values_list("epoch", flat=True)) == [1, 2]
    record = json.loads((output / "run.json").read_text())
    # run.json records the method and every option, the method's own included.
    assert record["config"] == build_config(method, **options).to_dict()
    assert record["config"]["method"] == method
    assert record["base_model"]["base_model_family"] == detect_family(str(family_model_dir)).name
    weights, zero_at_start = WEIGHTS[method]
    for folder in (output, output / "best", output / "last"):
        assert (folder / weights).is_file()
    trained = [value for key, value in load_file(output / weights).items() if zero_at_start in key]
    assert trained and all(value.abs().max() > 0 for value in trained)  # every module moved off its start
    assert f"Training run {run.pk} finished" in stdout.getvalue()
    # The run's download holds every file a user loads, a PEFT folder's config with its weights.
    names = {path.name for path in training_run_adapter_files(run=run)}
    assert names == {path.name for path in (output / "best").iterdir()} | {"run.json"}


def test_a_method_refuses_an_option_it_lacks(tmp_path, prepared_dir, fast_options):
    with pytest.raises(CommandError, match=r"^unknown loha option\(s\): dropout\.$"):
        call_command(
            "train", method="loha", data=prepared_dir, output=tmp_path / "out", dropout=0.1, **fast_options
        )
    assert not (tmp_path / "out").exists()


def test_killed_lokr_run_resumes_to_the_uninterrupted_result(tmp_path, prepared_dir, fast_options):
    # Module and rank dropout make the result depend on every RNG the checkpoint must restore.
    config = build_config(
        "lokr", **fast_options, rank=2, module_dropout=0.2, rank_dropout=0.2, learning_rate=1e-3
    )
    reference = engine_train(prepared_dir, tmp_path / "reference", config)

    def kill(report: Progress) -> None:
        if report.stage == "epoch" and report.done == 1:
            raise Killed

    with pytest.raises(Killed):
        engine_train(prepared_dir, tmp_path / "killed", config, progress=kill)
    resumed = engine_train(prepared_dir, tmp_path / "killed", config, resume=True)
    assert resumed.resumed_from_epoch == 1
    assert [epoch.val_loss for epoch in resumed.epochs] == [epoch.val_loss for epoch in reference.epochs]
    expected = load_file(tmp_path / "reference" / "last" / "adapter_model.safetensors")
    actual = load_file(tmp_path / "killed" / "last" / "adapter_model.safetensors")
    assert expected.keys() == actual.keys() and all(
        torch.equal(expected[key], actual[key]) for key in expected
    )
