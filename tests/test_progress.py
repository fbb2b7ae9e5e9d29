"""The progress protocol's tqdm callback: what a user sees while a command works."""

import io

from peftlab.progress import Progress, TqdmProgress


def test_one_bar_per_stage_with_counts_and_metrics():
    stream = io.StringIO()
    progress = TqdmProgress(stream=stream, mininterval=0)
    for done in (1, 2, 3):
        progress(Progress("cache", done, 3))
    progress(Progress("epoch 1/2", 5, 10, metrics={"loss": 0.123456}))
    progress.close()
    text = stream.getvalue().replace("\r", "\n")
    assert "cache: 100%" in text and "3/3" in text
    assert "epoch 1/2:  50%" in text and "5/10" in text and "loss=0.1235" in text
