"""Fixtures of the trainer tests: a small prepared dataset of real images at 64x64."""

from pathlib import Path

import pytest

TRAIN_IMAGES = 6  # 4 train + 2 validation: two steps per epoch at batch size 2


@pytest.fixture(scope="session")
def prepared_dir(tmp_path_factory, ghibli_dir) -> Path:
    """Six real captioned images prepared at 64x64 (4 train, 2 validation), built once per session."""
    from trainer.engine.dataset import PrepareConfig, prepare_dataset

    source = tmp_path_factory.mktemp("ghibli-subset")
    for image in sorted(ghibli_dir.glob("*.jpg"))[:TRAIN_IMAGES]:
        # Links, not copies: the shared data stays where it is.
        (source / image.name).symlink_to(image)
        (source / f"{image.stem}.txt").symlink_to(image.with_suffix(".txt"))
    output = tmp_path_factory.mktemp("prepared") / "ghibli-64"
    prepare_dataset(source, output, PrepareConfig(resolution=64, min_size=64, val_fraction=0.34))
    return output


@pytest.fixture(scope="session")
def fast_options(tiny_model_dir) -> dict:
    """Options shared by the tests' runs: the tiny model, 64px, two epochs of two steps."""
    return {"model": str(tiny_model_dir), "resolution": 64, "epochs": 2, "batch_size": 2}


@pytest.fixture
def script_validation(monkeypatch):
    """Make the loop's validation losses a script, one per epoch from epoch 0: a test builds the curve it needs
    (a loss that turns up, say) instead of tuning a learning rate until this CPU's float trajectory turns."""
    from trainer.engine.loop import Trainer

    def script(losses: list[float]) -> None:
        # The loop validates epoch N when N epochs are in its history (epoch 0 included), also after a resume.
        monkeypatch.setattr(Trainer, "validation_loss", lambda self: losses[len(self.history)])

    return script
