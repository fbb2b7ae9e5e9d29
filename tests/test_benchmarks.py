"""The training benchmarks run end to end on CPU: the first GPU run must not fail on a typo or lose a row."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
NUMBER = r"\d+\.\d+"


def run(*command: str) -> str:
    """A benchmark's standard output; a failure shows its last lines. One torch thread (the figures are not
    under test, and a busy two-core machine runs one thread without oversubscription); a generous limit: the
    dry run takes about 90 s on a quiet two-core machine and several times that beside other work."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=3600, env=env)
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    return done.stdout


@pytest.mark.slow
def test_gpu_benchmark_dry_run_prints_every_row():
    out = run("bash", "benchmarks/gpu.sh", "--dry-run")
    # The dry run's sizes: batches 1 and 2, the reference and model-only loops at batch 2.
    expected = [
        ("lora", 1),
        ("lora", 2),
        ("lora reference", 2),
        ("lora model-only", 2),
        ("ti", 1),
        ("ti", 2),
        ("ti reference", 2),
        ("ti model-only", 2),
        ("generate", 2),
        ("generate plain", 1),
        # SDXL on the tiny SDXL model: LoRA at batches 1 and 2 without and with gradient checkpointing,
        # generation against the plain StableDiffusionXLPipeline loop; after the SD-1.5 rows, before --compile.
        ("sdxl lora", 1),
        ("sdxl lora gc", 1),
        ("sdxl lora", 2),
        ("sdxl lora gc", 2),
        ("sdxl generate", 2),
        ("sdxl generate plain", 1),
        ("lora compile", 1),
        ("lora compile", 2),
        ("ti compile", 1),
        ("ti compile", 2),
    ]
    starts = []
    for label, batch in expected:
        row = re.search(rf"^{label} +{batch} +{NUMBER} +{NUMBER} +{NUMBER}", out, re.MULTILINE)
        assert row, label
        starts.append(row.start())
    assert starts == sorted(starts), "the rows print in the table's order"
    assert "sdxl: tiny SDXL-shaped random weights, 64x64, mixed precision bf16" in out
    assert "skipped" not in out  # a dry run has no time box or budget
    assert "gpu.sh:" in out


@pytest.mark.slow
def test_cpu_benchmark_prints_ratio_and_bound_per_method(tmp_path):
    """Each printed column is the unrounded figure it names, rounded: the ratio is peftlab / reference and the
    bound model-only / reference, both computed from the unrounded rates (the JSON the benchmark writes)."""
    figures_file = tmp_path / "figures.json"
    out = run(
        sys.executable,
        *("benchmarks/train.py", "--images", "4", "--epochs", "2", "--tiny-vocabulary"),
        *("--json", str(figures_file)),
    )
    figures = json.loads(figures_file.read_text())
    for method in ("lora", "ti"):
        row = re.search(rf"^{method} +({NUMBER}) +({NUMBER}) +({NUMBER}) +({NUMBER}) +({NUMBER})$", out, re.M)
        assert row, out
        unrounded = figures[method]
        expected = (
            f"{unrounded['peftlab']:.1f}",
            f"{unrounded['reference']:.1f}",
            f"{unrounded['peftlab'] / unrounded['reference']:.2f}",
            f"{unrounded['model_only']:.1f}",
            f"{unrounded['model_only'] / unrounded['reference']:.2f}",
        )
        assert row.groups() == expected
        # The epoch split: run.json's parts of the median epoch, the saves' share, epoch/train and the run's time.
        split = re.search(rf"^{method}" + rf" +({NUMBER})" * 7 + "$", out, re.M)
        assert split, out
        assert split.groups() == (
            *(
                f"{unrounded[part]:.3f}"
                for part in ("seconds", "train_seconds", "validation_seconds", "save_seconds")
            ),
            f"{unrounded['save_seconds'] / unrounded['seconds']:.3f}",
            f"{unrounded['seconds'] / unrounded['train_seconds']:.3f}",
            f"{unrounded['run_seconds']:.1f}",
        )


def test_sequential_benchmark_prints_every_table_and_keeps_the_anytime_false_positive_rate():
    """A small run end to end (the figures in docs/analysis.md come from the default sizes)."""
    out = run(
        sys.executable,
        *("benchmarks/sequential.py", "--paths", "300", "--arm-paths", "2", "--participants", "60"),
        *("--null-paths", "2"),
        *("--max-participants", "200", "--arm-max", "100"),
    )
    anytime = float(re.search(r"anytime-valid \(e-value >= 20\): +(\d+\.\d)%", out).group(1))
    peeking = float(re.search(r"fixed-n headline test, peeking: +(\d+\.\d)%", out).group(1))
    assert anytime <= 5.0 < peeking
    for preference in ("0.60", "0.65", "0.75"):
        assert re.search(rf"^ +{preference} +\d+\.\d%", out, re.MULTILINE), preference
    assert "uniform " in out and "adaptive  every pair decided" in out and "all arms equal" in out


def test_a_gpu_row_past_its_time_box_is_skipped_with_a_line_and_the_next_rows_go_on(capsys, monkeypatch):
    import time

    bench = load_train_benchmark(monkeypatch)
    assert bench.boxed("lora compile", 4, 0.05, lambda: time.sleep(60)) is None
    out = capsys.readouterr().out
    assert re.search(
        r"^lora compile +4 skipped: ran past its 0.05 s time box \(--row-seconds\)", out, re.M
    ), out
    assert bench.boxed("lora", 4, 60.0, lambda: 1.5) == 1.5  # a row inside its box gives its figure
    assert bench.boxed("lora", 4, None, lambda: 2.5) == 2.5  # no box (the dry run)
    assert capsys.readouterr().out == ""


def load_train_benchmark(monkeypatch):
    import importlib.util

    spec = importlib.util.spec_from_file_location("train_benchmark", REPO / "benchmarks" / "train.py")
    bench = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, bench)  # its dataclasses look their module up
    spec.loader.exec_module(bench)
    return bench


def test_a_gpu_row_past_the_budget_is_skipped_with_a_line_and_a_failing_row_says_why(capsys, monkeypatch):
    """--budget-seconds: a row is boxed to what is left, skipped when under MIN_ROW_SECONDS is left; on a GPU
    a row that fails prints its error and the next rows go on (a dry run raises it)."""
    import argparse
    import time

    bench = load_train_benchmark(monkeypatch)
    args = argparse.Namespace(row_seconds=120.0, budget_seconds=1000.0, dry_run=False)
    budget = bench.Budget(args)
    assert budget.run("sdxl lora", 1, lambda: 2.5) == 2.5
    budget.deadline = time.monotonic() + bench.MIN_ROW_SECONDS + 0.05  # the box: what is left of the budget
    assert budget.run("sdxl lora gc", 4, lambda: time.sleep(60), note=lambda: "peak so far 1.0 GiB") is None
    budget.deadline = time.monotonic() + 5
    assert budget.run("lora compile", 8, lambda: 1.0) is None
    budget.deadline = None

    def fail() -> None:
        raise RuntimeError("no kernel image\nmore")

    assert budget.run("sdxl generate", 4, fail) is None
    out = capsys.readouterr().out.splitlines()
    assert re.match(
        r"sdxl lora gc +4 skipped: ran past its 2\d\.\d+ s time box \(what was left of the run's 1000 s budget\); "
        r"peak so far 1.0 GiB; the next rows go on",
        out[0],
    ), out
    assert re.match(r"lora compile +8 skipped: \d s left of the run's 1000 s budget", out[1]), out
    assert out[2] == "sdxl generate            4 skipped: RuntimeError: no kernel image", out
    dry = bench.Budget(argparse.Namespace(row_seconds=None, budget_seconds=None, dry_run=True))
    with pytest.raises(RuntimeError):
        dry.run("sdxl generate", 2, fail)


def test_the_sdxl_rows_say_why_they_are_skipped_when_too_little_budget_is_left(capsys, monkeypatch, tmp_path):
    """Under SDXL_SETUP_SECONDS of the budget left, nothing is built: each SDXL row prints its line."""
    import argparse
    import time

    bench = load_train_benchmark(monkeypatch)
    args = argparse.Namespace(
        row_seconds=120.0, budget_seconds=450.0, dry_run=False, sdxl_batch_sizes=[1, 4], sdxl_gen_batch=4
    )
    budget = bench.Budget(args)
    budget.deadline = time.monotonic() + bench.SDXL_SETUP_SECONDS - 5
    bench.sdxl_rows(args, tmp_path, "bf16", budget)
    out = capsys.readouterr().out.splitlines()
    rows = [("sdxl lora", 1), ("sdxl lora gc", 1), ("sdxl lora", 4), ("sdxl lora gc", 4)]
    rows += [("sdxl generate", 4), ("sdxl generate plain", 1)]
    assert len(out) == len(rows)
    for line, (label, batch) in zip(out, rows, strict=True):
        assert re.match(rf"{label} +{batch} skipped: 5\d s left of the run's 450 s budget, under the 60 s", line), line
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_methods_benchmark_prints_speed_and_memory_per_method(tmp_path):
    """--methods: one row per method on the same data, each the unrounded figures it names, rounded."""
    figures_file = tmp_path / "methods.json"
    out = run(
        sys.executable,
        *("benchmarks/train.py", "--methods", "lokr", "oft", "--images", "4", "--epochs", "2"),
        *("--json", str(figures_file)),
    )
    figures = json.loads(figures_file.read_text())
    assert list(figures) == ["lokr", "oft"]
    for method, unrounded in figures.items():
        row = re.search(rf"^{method} +({NUMBER}) +({NUMBER}) +({NUMBER})$", out, re.M)
        assert row, out
        assert row.groups() == (
            f"{unrounded['samples_per_s']:.2f}",
            f"{unrounded['epoch_seconds']:.2f}",
            f"{unrounded['peak_gib']:.2f}",
        )
        assert unrounded["samples_per_s"] > 0 and unrounded["peak_gib"] > 0
