"""train_lora end to end on the tiny model: outputs stock diffusers and kohya users can load."""

import csv
import json
from io import StringIO

import numpy as np
import pytest
import torch
from django.core.management import call_command
from safetensors.torch import load_file

from trainer.models import EpochMetric, TrainingRun

pytestmark = [pytest.mark.slow, pytest.mark.django_db]


def render(pipe) -> np.ndarray:
    """A 64px image for a fixed prompt and seed."""
    generator = torch.Generator().manual_seed(0)
    return pipe(
        "a tower at sunset", num_inference_steps=2, height=64, width=64, generator=generator, output_type="np"
    ).images[0]


@pytest.fixture(scope="module")
def lora_run(django_db_setup, django_db_blocker, tmp_path_factory, prepared_dir, fast_options):
    """One two-epoch LoRA run with alpha 8 != rank 4, through the command."""
    output = tmp_path_factory.mktemp("lora") / "out"
    stdout = StringIO()
    with django_db_blocker.unblock():
        call_command(
            "train_lora",
            stdout=stdout,
            data=prepared_dir,
            output=output,
            rank=4,
            alpha=8.0,
            learning_rate=1e-3,
            **fast_options,
        )
        run = TrainingRun.objects.get(output_path=str(output.resolve()))
        metrics = list(EpochMetric.objects.filter(run=run).values_list("epoch", flat=True))
    yield output, run, metrics, stdout.getvalue()
    with django_db_blocker.unblock():
        run.delete()  # made outside the tests' transactions, so not rolled back with them


def test_lora_run_records_outputs_and_metrics(lora_run):
    output, run, metrics, stdout = lora_run
    assert run.status == TrainingRun.Status.FINISHED and run.method == "lora"
    assert metrics == [1, 2]
    assert run.best_epoch in (1, 2)
    for name in (
        "pytorch_lora_weights.safetensors",
        "lora_kohya.safetensors",
        "metrics.csv",
        "loss.png",
        "run.json",
        "best/pytorch_lora_weights.safetensors",
        "last/pytorch_lora_weights.safetensors",
    ):
        assert (output / name).is_file(), name
    rows = list(csv.DictReader((output / "metrics.csv").open()))
    assert [row["epoch"] for row in rows] == ["0", "1", "2"]  # epoch 0: before the first step
    parts = ("train_seconds", "validation_seconds", "save_seconds")
    assert set(rows[0]) == {"epoch", "train_loss", "val_loss", "seconds", "samples_per_s", *parts}
    record = json.loads((output / "run.json").read_text())
    # Each epoch's wall time holds its parts, measured one after the other on one clock.
    first, *trained = record["epochs"]
    assert first["validation_seconds"] == first["seconds"] and first["save_seconds"] == 0.0
    for epoch in trained:
        assert all(epoch[part] > 0 for part in parts), epoch
        assert sum(epoch[part] for part in parts) <= epoch["seconds"], epoch
    assert record["config"]["alpha"] == 8.0 and record["config"]["method"] == "lora"
    assert set(record["seconds"]) == {"load", "cache", "train", "validate", "save"}
    assert len(record["dataset_manifest_sha256"]) == 64 and "torch" in record["versions"]
    # The tiny tokenizer splits words into many tokens: every caption of the subset is cut at 77, and said so.
    assert (record["max_caption_tokens"], record["captions_truncated"], record["captions"]) == (77, 6, 6)
    assert "6 of 6 captions were longer than --max-caption-tokens 77 allows and lost their tail" in stdout
    assert record["base_model"]["base_model_name_or_path"] == record["config"]["model"]
    assert {len(record["base_model"][part]) for part in ("base_unet_sha256", "base_text_encoder_sha256")} == {
        64
    }
    assert {oct(path.stat().st_mode & 0o777) for path in output.glob("*.*")} == {"0o644"}
    # The top-level weights are the best epoch's.
    best = load_file(output / "best" / "pytorch_lora_weights.safetensors")
    top = load_file(output / "pytorch_lora_weights.safetensors")
    assert all(torch.equal(best[key], top[key]) for key in best)


def test_lora_loads_in_stock_diffusers_with_alpha_and_changes_the_image(lora_run, tiny_model_dir):
    from diffusers import StableDiffusionPipeline

    output, _, _, _ = lora_run
    pipe = StableDiffusionPipeline.from_pretrained(tiny_model_dir, safety_checker=None)
    pipe.set_progress_bar_config(disable=True)
    base = render(pipe)
    pipe.load_lora_weights(output / "last")
    assert pipe.get_active_adapters()
    adapter = pipe.get_active_adapters()[0]
    # alpha != rank survives: the reloaded layers scale by alpha / rank = 2, as in training.
    layer = pipe.unet.down_blocks[0].attentions[0].transformer_blocks[0].attn1.to_q
    assert layer.scaling[adapter] == 2.0
    trained = torch.load(output / "checkpoint.pt", weights_only=False)["trainable"]
    loaded = {
        name.replace(f".{adapter}.", ".default."): p
        for name, p in pipe.unet.named_parameters()
        if "lora_" in name
    }
    assert trained.keys() == loaded.keys()
    assert all(torch.equal(trained[name], loaded[name]) for name in trained)
    assert not np.array_equal(render(pipe), base)


def test_lora_kohya_file_has_kohya_keys_and_alpha(lora_run):
    output, _, _, _ = lora_run
    kohya = load_file(output / "lora_kohya.safetensors")
    diffusers = load_file(output / "pytorch_lora_weights.safetensors")
    assert len(kohya) == len(diffusers) // 2 * 3  # down, up and alpha per module
    assert all(key.startswith("lora_unet_") for key in kohya)
    name = "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q"
    assert kohya[f"{name}.lora_down.weight"].shape == (4, 32)
    assert kohya[f"{name}.alpha"].item() == 8.0
