"""Bad input to train_lora and train_ti: one line, non-zero exit, no traceback, nothing half-written."""

import re
import shutil

import pytest
import torch
from django.core.management import CommandError, call_command

from peftlab.errors import UserInputError
from trainer.engine.config import LoraTrainingConfig, build_config, read_config_file
from trainer.models import TrainingRun

pytestmark = pytest.mark.django_db
TI = {"placeholder_token": "<gv-style>", "initializer_token": "style"}


def assert_refused(command, match, output, **options):
    """The command fails with one line matching `match` and leaves no output folder (not even an empty one)."""
    with pytest.raises(CommandError, match=match) as error:
        call_command(command, output=output, **options)
    assert "\n" not in str(error.value)
    assert not output.exists()
    assert not TrainingRun.objects.filter(
        output_path=str(output.resolve()), status=TrainingRun.Status.FINISHED
    )


@pytest.fixture
def copy_of(tmp_path, prepared_dir):
    """A writable copy of the prepared dataset."""
    copy = tmp_path / "dataset"
    shutil.copytree(prepared_dir, copy)
    return copy


def test_missing_dataset(tmp_path, fast_options):
    assert_refused(
        "train_lora", "does not exist", tmp_path / "out", data=tmp_path / "nowhere", **fast_options
    )


def test_missing_train_txt(tmp_path, copy_of, fast_options):
    (copy_of / "train.txt").unlink()
    assert_refused(
        "train_lora", r"train.txt is missing; prepare", tmp_path / "out", data=copy_of, **fast_options
    )


@pytest.mark.parametrize("split", ["train.txt", "validation.txt"])
def test_empty_split(tmp_path, copy_of, fast_options, split):
    (copy_of / split).write_text("")
    assert_refused("train_ti", f"{split} is empty", tmp_path / "out", data=copy_of, **fast_options, **TI)


def test_unwritable_output(tmp_path, prepared_dir, fast_options):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(CommandError, match="cannot write to the output folder"):
        call_command("train_lora", data=prepared_dir, output=blocker / "out", **fast_options)


@pytest.mark.parametrize(
    ("command", "options", "match"),
    [
        ("train_lora", {"rank": 0}, "--rank must be a positive integer"),
        ("train_lora", {"mixed_precision": "fp8"}, "--mixed-precision must be one of"),
        ("train_ti", {"initializer_token": "style"}, "--placeholder-token is required"),
        ("train_ti", {**TI, "caption_template": "no token here"}, "must contain {token}"),
    ],
)
def test_invalid_options(tmp_path, prepared_dir, fast_options, command, options, match):
    assert_refused(command, match, tmp_path / "out", data=prepared_dir, **fast_options, **options)


def test_missing_model_folder_is_named_as_missing(tmp_path, prepared_dir, fast_options):
    """Not Hugging Face's "Repo id must be in the form ...": the user gave a folder."""
    options = {**fast_options, "model": str(tmp_path / "no-model")}
    assert_refused(
        "train_lora",
        f"--model {tmp_path / 'no-model'}: the folder does not exist; give a local diffusers folder",
        tmp_path / "out",
        data=prepared_dir,
        **options,
    )
    assert not TrainingRun.objects.exists()  # refused before a run is queued


def test_missing_model_is_refused_by_the_loader_too(tmp_path):
    """A queued run whose model folder went away before it started says the same."""
    from trainer.engine.data import load_components

    with pytest.raises(UserInputError, match="the folder does not exist"):
        load_components(str(tmp_path / "gone"))


def test_unloadable_model(tmp_path, prepared_dir, fast_options):
    model = tmp_path / "not-a-model"
    model.mkdir()
    options = {**fast_options, "model": str(model)}
    assert_refused(
        "train_lora",
        "cannot load the model .*downloads need network access",
        tmp_path / "out",
        data=prepared_dir,
        **options,
    )


@pytest.mark.slow
def test_target_module_matching_nothing_is_named(tmp_path, prepared_dir, fast_options):
    """PEFT adapts to_q alone and says nothing of foo; run.json would record "to_q,foo"."""
    assert_refused(
        "train_lora",
        "--target-modules names 'foo', which matches no module of the UNet",
        tmp_path / "out",
        data=prepared_dir,
        **fast_options,
        target_modules="to_q,foo",
    )


def test_checkpoint_of_another_rank_names_both_shapes(tiny_model_dir):
    from trainer.engine.data import load_components
    from trainer.engine.methods import make_method

    method = make_method(build_config("lora", model=str(tiny_model_dir), rank=4))
    parts = load_components(str(tiny_model_dir))
    method.setup(parts)
    state = method.trainable_state(parts.unet)
    name = sorted(state)[-1]
    state[name] = (
        torch.zeros(state[name].shape[0], 8) if "lora_B" in name else torch.zeros(8, state[name].shape[1])
    )
    with pytest.raises(
        UserInputError,
        match=rf"checkpoint's {re.escape(name)} has shape \((\d+, 8|8, \d+)\) but this run's has shape",
    ):
        method.load_trainable_state(parts.unet, state)


@pytest.mark.slow
@pytest.mark.parametrize("existed", [False, True])
def test_failed_proof_leaves_no_staging_folder(tmp_path, prepared_dir, fast_options, monkeypatch, existed):
    """The proof fails at the first save: no `.best-staging/`, and no output folder the run made."""
    from trainer.engine.loop import train
    from trainer.engine.proof import LoadProof

    def refuse(self, path, expected):
        raise UserInputError(f"{path} did not load back")

    monkeypatch.setattr(LoadProof, "lora", refuse)
    output = tmp_path / "out"
    if existed:
        output.mkdir()
    with pytest.raises(UserInputError, match="did not load back"):
        train(prepared_dir, output, build_config("lora", **fast_options))
    assert (list(output.iterdir()) == []) if existed else not output.exists()


def test_sample_prediction_model_is_refused(tmp_path, prepared_dir, fast_options, tiny_model_dir):
    """Only epsilon and v-prediction have a training target; `sample` was trained as v-prediction."""
    import json

    model = tmp_path / "sample-model"
    shutil.copytree(tiny_model_dir, model)
    scheduler = model / "scheduler" / "scheduler_config.json"
    scheduler.write_text(json.dumps({**json.loads(scheduler.read_text()), "prediction_type": "sample"}))
    assert_refused(
        "train_lora",
        "predicts 'sample'; training supports epsilon and v_prediction",
        tmp_path / "out",
        data=prepared_dir,
        **{**fast_options, "model": str(model)},
    )


@pytest.mark.slow
def test_placeholder_token_already_in_vocabulary(tmp_path, prepared_dir, fast_options):
    assert_refused(
        "train_ti",
        "'tower' is already in the vocabulary",
        tmp_path / "out",
        data=prepared_dir,
        **fast_options,
        placeholder_token="tower",
        initializer_token="style",
    )


@pytest.mark.slow
def test_multi_token_initializer(tmp_path, prepared_dir, fast_options):
    assert_refused(
        "train_ti",
        "is 3 tokens; give a word that is exactly one token",
        tmp_path / "out",
        data=prepared_dir,
        **fast_options,
        placeholder_token="<gv>",
        initializer_token="zqx",
    )


@pytest.mark.slow
def test_nan_loss(tmp_path, prepared_dir, fast_options):
    options = {**fast_options, "learning_rate": 1e30, "max_grad_norm": 0.0}
    assert_refused(
        "train_lora",
        "loss became (nan|inf).*lower --learning-rate",
        tmp_path / "out",
        data=prepared_dir,
        **options,
    )
    run = TrainingRun.objects.get(output_path=str((tmp_path / "out").resolve()))
    assert run.status == TrainingRun.Status.FAILED and "loss became" in run.error


def test_config_file_values_are_overridden_by_flags(tmp_path):
    (tmp_path / "lora.toml").write_text(
        'epochs = 3\nlearning-rate = 0.001\nrank = 8\nlr_scheduler = "linear"\n'
    )
    (tmp_path / "lora.json").write_text('{"epochs": 3, "alpha": 16}')
    config = build_config("lora", read_config_file(tmp_path / "lora.toml"), epochs=5)
    assert isinstance(config, LoraTrainingConfig)
    assert (config.epochs, config.learning_rate, config.rank, config.lr_scheduler) == (5, 1e-3, 8, "linear")
    assert build_config("lora", read_config_file(tmp_path / "lora.json")).alpha == 16.0
    assert build_config("ti", **TI).learning_rate == 5e-4  # TI's own default
    with pytest.raises(Exception, match="unknown lora option"):
        build_config("lora", {"epoch": 3})


def test_config_file_errors_are_one_line(tmp_path, prepared_dir):
    (tmp_path / "bad.toml").write_text("epochs = [")
    with pytest.raises(CommandError, match="is not valid TOML or JSON"):
        call_command("train_lora", data=prepared_dir, output=tmp_path / "out", config=tmp_path / "bad.toml")
    (tmp_path / "typed.toml").write_text('epochs = "ten"')
    with pytest.raises(CommandError, match="option epochs must be int"):
        call_command("train_lora", data=prepared_dir, output=tmp_path / "out", config=tmp_path / "typed.toml")


def test_resume_without_a_checkpoint(tmp_path, prepared_dir, fast_options):
    assert_refused(
        "train_lora", "nothing to resume", tmp_path / "out", data=prepared_dir, resume=True, **fast_options
    )


def test_training_runs_are_listed_in_the_admin(admin_client, tmp_path, prepared_dir):
    from trainer.models import EpochMetric

    run = TrainingRun.objects.create(
        method="lora", dataset_path=str(prepared_dir), output_path=str(tmp_path / "out"), config={"rank": 4}
    )
    EpochMetric.objects.create(
        run=run, epoch=1, train_loss=0.5, val_loss=0.25, seconds=1.0, samples_per_s=3.0
    )
    assert str(tmp_path / "out") in admin_client.get("/admin/trainer/trainingrun/").content.decode()
    page = admin_client.get(f"/admin/trainer/trainingrun/{run.pk}/change/").content.decode()
    assert "0.25" in page  # the epoch's validation loss, inline
