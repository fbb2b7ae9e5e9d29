"""The demo pipeline: each stage calls the same services as the commands, on the tiny model."""

from collections.abc import Callable
from pathlib import Path

from trainer.engine.dataset import PrepareConfig
from trainer.engine.synthetic import SyntheticDatasetConfig, make_synthetic_dataset
from trainer.engine.tiny_model import TinyModelConfig
from trainer.services import dataset_prepare, tiny_model_build


def run_demo(*, output: Path, log: Callable[[str], None]) -> list[str]:
    """Run every stage that exists today into `output`; return the lines that say what was produced."""
    output = Path(output)
    log("1/2 Building the tiny offline model and a synthetic captioned dataset")
    model = tiny_model_build(output=output / "tiny-model", config=TinyModelConfig())
    make_synthetic_dataset(output / "raw", SyntheticDatasetConfig())
    log("2/2 Preparing the dataset")
    dataset, prepared = dataset_prepare(
        source=output / "raw", output=output / "dataset", config=PrepareConfig(resolution=64, min_size=64)
    )
    return [
        f"model    {model.path} ({model.parameter_count:,} parameters)",
        f"dataset  {dataset.path}: {dataset.num_train} train, {dataset.num_validation} validation, "
        f"{dataset.num_skipped} skipped",
    ]
