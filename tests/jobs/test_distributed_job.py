"""A training job that asks for 2 processes, run by a real forking `manage.py rqworker` against the real Redis."""

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]


def manage(env: dict[str, str], *arguments: str) -> subprocess.CompletedProcess:
    result = subprocess.run(
        [sys.executable, "manage.py", *arguments],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result


@pytest.fixture
def dataset_dir(tmp_path) -> Path:
    """Six synthetic captioned images prepared at 64x64 (4 train, 2 validation)."""
    from trainer.engine.dataset import PrepareConfig, prepare_dataset
    from trainer.engine.synthetic import SyntheticDatasetConfig, make_synthetic_dataset

    make_synthetic_dataset(tmp_path / "source", SyntheticDatasetConfig(count=6, size=64))
    prepare_dataset(
        tmp_path / "source",
        tmp_path / "dataset",
        PrepareConfig(resolution=64, min_size=64, val_fraction=0.34),
    )
    return tmp_path / "dataset"


def test_training_job_on_two_processes_under_a_real_rqworker(
    redis_url, tmp_path, tiny_model_dir, dataset_dir
):
    # The web side and the worker are separate processes here, as in production: they share a database file.
    database = tmp_path / "db.sqlite3"
    env = {
        **os.environ,
        "DATABASE_URL": f"sqlite:///{database}",
        "REDIS_URL": redis_url,
        "OMP_NUM_THREADS": "1",
    }
    manage(env, "migrate", "-v0")
    output = tmp_path / "run"
    config = {"model": str(tiny_model_dir), "resolution": 64, "epochs": 2, "batch_size": 1}
    manage(
        env,
        "shell",
        "-c",
        "from pathlib import Path; from trainer.engine.config import build_config; "
        "from trainer.jobs import training_job_enqueue; "
        f"training_job_enqueue(method='lora', dataset_dir=Path({str(dataset_dir)!r}), output=Path({str(output)!r}), "
        f"config=build_config('lora', **{config!r}), processes=2)",
    )
    manage(env, "rqworker", "gpu", "--burst")

    with sqlite3.connect(database) as connection:
        (job,) = connection.execute("SELECT status, error, stage, done, total, log, kwargs FROM peftlab_job")
        (run,) = connection.execute("SELECT id, status FROM trainer_trainingrun")
        epochs = connection.execute("SELECT epoch FROM trainer_epochmetric ORDER BY epoch").fetchall()
    status, error, stage, done, total, log, kwargs = job
    assert status == "finished", error
    assert json.loads(kwargs) == {"processes": 2}
    assert run[1] == "finished" and epochs == [(1,), (2,)]
    # Progress came back from the main process only: each epoch's line once.
    assert (stage, done, total) == ("epoch", 2, 2)
    assert log.count("[epoch] epoch 1/2") == 1 and log.count("[epoch] epoch 2/2") == 1
    record = json.loads((output / "run.json").read_text())
    assert record["processes"] == 2 and record["global_batch"] == 2
