"""A run tells the researcher, on its record and run.json, what the logs used to keep: captions cut, images
upscaled, images skipped; and its progress reports the whole run's share (epochs x steps)."""

import json

import pytest

from peftlab.progress import Progress
from trainer.engine.config import build_config
from trainer.engine.dataset import PrepareConfig, prepare_dataset
from trainer.selectors import training_run_adapter_files
from trainer.services import training_run_create, training_run_execute

pytestmark = [pytest.mark.slow, pytest.mark.django_db]


def test_warnings_are_recorded_and_progress_covers_the_whole_run(tmp_path, ghibli_dir, tiny_model_dir):
    source = tmp_path / "source"
    source.mkdir()
    for image in sorted(ghibli_dir.glob("*.jpg"))[:6]:
        (source / image.name).symlink_to(image)
        (source / f"{image.stem}.txt").symlink_to(image.with_suffix(".txt"))
    (source / "broken.jpg").write_bytes(b"not a picture")
    (source / "broken.txt").write_text("a caption", encoding="utf-8")
    dataset = tmp_path / "dataset"
    prepare_dataset(source, dataset, PrepareConfig(resolution=64, min_size=64, val_fraction=0.34))
    config = build_config("lora", model=str(tiny_model_dir), resolution=128, epochs=2, batch_size=2)
    run = training_run_create(method="lora", dataset_dir=dataset, output=tmp_path / "out", config=config)
    reports: list[Progress] = []
    run = training_run_execute(run=run, progress=reports.append)

    resolution, skipped, captions = run.warnings
    assert resolution.startswith(
        "training at 128 px on a dataset prepared at 64 px: every image is upscaled 2x"
    )
    assert skipped.startswith("1 source image was skipped when the dataset was prepared: broken.jpg (")
    # Every ghibli caption is longer than one window of the tiny model's character-level tokenizer.
    assert captions.startswith(
        "6 of 6 captions are longer than 75 tokens and lose their tail (--max-caption-tokens 77)"
    )
    assert json.loads((tmp_path / "out" / "run.json").read_text())["warnings"] == run.warnings

    shares = [
        (report.stage, report.done, report.total, report.overall)
        for report in reports
        if report.overall is not None
    ]
    assert shares == [
        ("epoch 1/2", 2, 2, 0.5),
        ("epoch", 1, 2, 0.5),
        ("epoch 2/2", 2, 2, 1.0),
        ("epoch", 2, 2, 1.0),
    ]
    # The console's adapter zip holds the best epoch's diffusers and kohya files, and run.json.
    names = [path.name for path in training_run_adapter_files(run=run)]
    assert names == ["lora_kohya.safetensors", "pytorch_lora_weights.safetensors", "run.json"]
