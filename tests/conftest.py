"""Fixtures shared by the whole suite: the tiny model, the real shared data, Redis."""

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SHARED_DATA = Path(os.environ.get("PEFTLAB_SHARED_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def django_db_modify_db_settings(django_db_modify_db_settings_parallel_suffix, tmp_path_factory) -> None:
    """SQLite's test database in a file, as in production, not Django's shared-cache memory database: there a
    write that meets another connection's read fails at once ("database table is locked": shared-cache table
    locks ignore the busy timeout), so a job thread writing its row beside a test polling it failed on a busy
    machine; on a file the write waits (settings: timeout 30 s)."""
    from django.conf import settings

    database = settings.DATABASES["default"]
    if database["ENGINE"] == "django.db.backends.sqlite3":
        database.setdefault("TEST", {})["NAME"] = str(tmp_path_factory.mktemp("database") / "test.sqlite3")


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A tiny SD-shaped pipeline built once per test session (text width 32, 64px)."""
    from trainer.engine.tiny_model import TinyModelConfig, build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("models") / "tiny", TinyModelConfig()).path


@pytest.fixture(scope="session")
def tiny_sdxl_dir(tmp_path_factory) -> Path:
    """A tiny SDXL-shaped pipeline (two text encoders, 32 and 64 wide; text_time UNet; 64px), built once."""
    from trainer.engine.tiny_model import TinyModelConfig, build_tiny_model

    return build_tiny_model(
        tmp_path_factory.mktemp("models") / "tiny-sdxl", TinyModelConfig(family="sdxl")
    ).path


FAMILY_MODELS = {"sd15": "tiny_model_dir", "sdxl": "tiny_sdxl_dir"}  # family -> its tiny model's fixture


@pytest.fixture(params=sorted(FAMILY_MODELS))
def family_model_dir(request) -> Path:
    """The tiny model of each family (SD 1.x, SDXL): a test that takes it runs once per family (ids sd15, sdxl)."""
    return request.getfixturevalue(FAMILY_MODELS[request.param])


@pytest.fixture(scope="session")
def tiny_sdxl_runs(tmp_path_factory, tiny_sdxl_dir) -> dict[str, Path]:
    """LoRA and TI trained once per session on the tiny SDXL model (the demo's synthetic data and settings):
    each run's output folder, by method, and the prepared dataset under "dataset"."""
    from trainer.engine.config import build_config
    from trainer.engine.dataset import PrepareConfig, prepare_dataset
    from trainer.engine.loop import train
    from trainer.engine.synthetic import SyntheticDatasetConfig, make_synthetic_dataset

    root = tmp_path_factory.mktemp("sdxl-runs")
    make_synthetic_dataset(root / "raw", SyntheticDatasetConfig())
    dataset = prepare_dataset(root / "raw", root / "dataset", PrepareConfig(resolution=64, min_size=64)).path
    shared = {"model": str(tiny_sdxl_dir), "resolution": 64, "epochs": 4, "batch_size": 4, "seed": 0}
    methods = {
        "lora": {"learning_rate": 1e-2, "rank": 4, "alpha": 4},
        "ti": {"learning_rate": 5e-2, "placeholder_token": "<ghiblivis-xl>", "initializer_token": "style"},
    }
    runs = {"dataset": dataset}
    for method, overrides in methods.items():
        runs[method] = train(dataset, root / method, build_config(method, **shared, **overrides)).output
    return runs


@pytest.fixture(scope="session")
def ghibli_dir() -> Path:
    """The reference study's 113 captioned training images (read-only, never copied into the repo)."""
    path = SHARED_DATA / "ghibli-landmarks"
    if not path.is_dir():
        pytest.skip(f"the shared data is not at {path}; set PEFTLAB_SHARED_DATA to its folder")
    return path


@pytest.fixture(scope="session")
def seed_study_dir() -> Path:
    """The ten images the reference study's participants judged, with prompts and references."""
    path = SHARED_DATA / "seed-study"
    if not path.is_dir():
        pytest.skip(f"the shared data is not at {path}; set PEFTLAB_SHARED_DATA to its folder")
    return path


@pytest.fixture
def redis_url() -> str:
    """A real Redis on a database number of its own (PEFTLAB_TEST_REDIS_DB, 15), flushed before and after the test."""
    url = os.environ.get("REDIS_URL")
    if not url:
        pytest.skip("REDIS_URL is unset: Redis tests run in CI and wherever REDIS_URL is set")
    from redis import Redis

    # Parallel checkouts on one machine each take their own number, so they never flush each other's jobs.
    db = os.environ.get("PEFTLAB_TEST_REDIS_DB", "15")
    base = url.rsplit("/", 1)[0] if url.rsplit("/", 1)[-1].isdigit() else url.rstrip("/")
    test_url = f"{base}/{db}"
    connection = Redis.from_url(test_url)
    connection.flushdb()
    yield test_url
    connection.flushdb()


# What marks a test as one that touches the database (pytest-django's marker, or a fixture that opens it).
DATABASE_FIXTURES = {
    "db",
    "transactional_db",
    "django_db_reset_sequences",
    "django_db_serialized_rollback",
    "live_server",
}


def touches_database(item: pytest.Item) -> bool:
    """Whether `item` opens the test database."""
    return item.get_closest_marker("django_db") is not None or bool(
        DATABASE_FIXTURES & set(getattr(item, "fixturenames", ()))
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """On the PostgreSQL leg (scripts/test-legs), keep only the tests that touch the database: a test that never
    opens it answered the same on the SQLite leg, and the model-training tests would double CI's time."""
    if os.environ.get("PEFTLAB_TEST_LEG") != "postgresql":
        return
    dropped = [item for item in items if not touches_database(item)]
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = [item for item in items if touches_database(item)]
