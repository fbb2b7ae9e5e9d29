"""Fixtures for the job tests: django-rq pointed at the test Redis, and a small folder of images."""

from pathlib import Path

import pytest
from PIL import Image


@pytest.fixture
def rq_settings(settings, redis_url):
    """Point REDIS_URL and both django-rq queues at the test Redis database."""
    settings.REDIS_URL = redis_url
    settings.RQ_QUEUES = {
        "default": {"URL": redis_url, "DEFAULT_TIMEOUT": 600},
        "gpu": {"URL": redis_url, "DEFAULT_TIMEOUT": 3600},
    }
    return settings


@pytest.fixture
def no_redis(settings):
    """The embedded default: no REDIS_URL, jobs run in-process."""
    settings.REDIS_URL = ""
    return settings


@pytest.fixture
def images_dir(tmp_path) -> Path:
    """Four small captioned images, enough for dataset preparation."""
    folder = tmp_path / "images"
    folder.mkdir()
    for index in range(4):
        Image.new("RGB", (80, 64), (60 * index, 90, 200)).save(folder / f"image{index}.png")
        (folder / f"image{index}.txt").write_text(f"ghiblivis picture {index}", encoding="utf-8")
    return folder
