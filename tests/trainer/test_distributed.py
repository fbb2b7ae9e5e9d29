"""Several processes share one training: two CPU processes (gloo) launched by torchrun, as on a GPU box."""

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import torch
from safetensors.torch import load_file

from peftlab.errors import UserInputError
from trainer.engine.config import build_config
from trainer.engine.distributed import check_process_group, is_main_process
from trainer.engine.launch import first_errors, launch_training
from trainer.engine.loop import train as engine_train

REPO = Path(__file__).resolve().parents[2]
# Float sums over 2 processes (gradients averaged by all-reduce) and over another thread count round
# differently from one process's batch of 2: the results agree to float32 rounding, not bit for bit.
# Seen: losses within 1e-6 relative; weights mostly within 2e-6 absolute after 12 Adam steps (which move
# them ~1e-2), but Adam divides each gradient by its own running scale, so an element whose gradient is
# near zero can take a rounding-sized gradient as a whole step: seen 1.8e-5 once with fused AdamW. The
# weights agree to 1e-4 absolute, 1 % of what training moved them; a wrong split of the random draws or of
# the batches moves the losses by far more than LOSS_RTOL.
LOSS_RTOL = 1e-5
WEIGHT_TOLERANCE = {"rtol": 1e-4, "atol": 1e-4}
LORA_FILE = "pytorch_lora_weights.safetensors"


def test_a_launch_whose_processes_did_not_join_one_group_is_refused():
    with pytest.raises(UserInputError, match="started 2 processes but 1 joined the process group"):
        check_process_group(1, {"WORLD_SIZE": "2", "RANK": "0"})
    with pytest.raises(UserInputError, match="started 4 processes but 1 joined"):
        check_process_group(1, {"OMPI_COMM_WORLD_SIZE": "4"})  # mpirun
    check_process_group(2, {"WORLD_SIZE": "2"})
    check_process_group(1, {})  # no launcher: one process


def test_make_accelerator_refuses_processes_that_did_not_join(monkeypatch):
    """The check runs on the Accelerator every training builds, not only when called by hand."""
    import accelerate

    from trainer.engine.distributed import make_accelerator

    class OneProcessGroup:
        """An Accelerator whose group holds this process only, as when the launcher's rendezvous failed."""

        num_processes = 1

        def __init__(self, cpu: bool, mixed_precision: str) -> None:
            self.cpu = cpu

    monkeypatch.setattr(accelerate, "Accelerator", OneProcessGroup)
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(UserInputError, match="started 2 processes but 1 joined the process group"):
        make_accelerator("no")
    monkeypatch.setenv("WORLD_SIZE", "1")
    assert make_accelerator("no").num_processes == 1


def test_a_failed_launch_names_the_first_error_not_only_the_peers_lost_connection():
    # As two gloo processes print it: rank 1 fails, rank 0 then loses it in backward's all-reduce.
    stderr = (
        "Traceback (most recent call last):\n"
        '  File "manage.py", line 22, in <module>\n'
        "MemoryError: rank 1 ran out\n"
        "Traceback (most recent call last):\n"
        '  File "torch/autograd/__init__.py", line 354, in backward\n'
        "RuntimeError: [gloo/transport/tcp/pair.cc:534] Connection closed by peer [127.0.0.1]:51234\n"
        "E1203 11:38:02 torch/distributed/elastic/multiprocessing/api.py:900] failed (exitcode: 1)\n"
        "torch.distributed.elastic.multiprocessing.errors.ChildFailedError: \n"
        "RuntimeError: [gloo/transport/tcp/pair.cc:534] Connection closed by peer [127.0.0.1]:51234\n"
    )
    assert first_errors(stderr) == [
        "MemoryError: rank 1 ran out",
        "RuntimeError: [gloo/transport/tcp/pair.cc:534] Connection closed by peer [127.0.0.1]:51234",
        "torch.distributed.elastic.multiprocessing.errors.ChildFailedError: ",
    ]


def test_only_rank_zero_is_the_main_process_whatever_the_launcher():
    assert is_main_process({}) and is_main_process({"RANK": "0", "WORLD_SIZE": "2"})
    assert not is_main_process({"RANK": "1", "WORLD_SIZE": "2"})
    assert not is_main_process({"OMPI_COMM_WORLD_RANK": "1", "OMPI_COMM_WORLD_SIZE": "2"})


@pytest.fixture(scope="module")
def dataset_dir(tmp_path_factory) -> Path:
    """Six synthetic captioned images prepared at 64x64 (4 train, 2 validation): no shared data needed."""
    from trainer.engine.dataset import PrepareConfig, prepare_dataset
    from trainer.engine.synthetic import SyntheticDatasetConfig, make_synthetic_dataset

    source = tmp_path_factory.mktemp("synthetic")
    make_synthetic_dataset(source, SyntheticDatasetConfig(count=6, size=64))
    output = tmp_path_factory.mktemp("prepared") / "synthetic-64"
    prepare_dataset(source, output, PrepareConfig(resolution=64, min_size=64, val_fraction=0.34))
    return output


@pytest.mark.slow
def test_training_in_another_precision_in_the_same_process_is_refused(tmp_path, dataset_dir, fast_options):
    engine_train(dataset_dir, tmp_path / "float32", build_config("lora", **{**fast_options, "epochs": 1}))
    bf16 = build_config("lora", **{**fast_options, "epochs": 1, "mixed_precision": "bf16"})
    with pytest.raises(UserInputError, match="Accelerate keeps one per process; train in a new process"):
        engine_train(dataset_dir, tmp_path / "bf16", bf16)
    assert not (tmp_path / "bf16").exists()  # no folder left by the failed start


@pytest.fixture(scope="module")
def environment(tmp_path_factory) -> dict[str, str]:
    """The launched processes' environment: a migrated SQLite file of their own, one CPU thread each."""
    database = tmp_path_factory.mktemp("db") / "db.sqlite3"
    env = {**os.environ, "DATABASE_URL": f"sqlite:///{database}", "OMP_NUM_THREADS": "1"}
    env.pop("ACCELERATE_USE_CPU", None)  # the group must form without it
    subprocess.run([sys.executable, "manage.py", "migrate", "-v0"], cwd=REPO, env=env, check=True)
    return env


def torchrun(command: str, options: dict, *extra: str) -> list[str]:
    """`torchrun --nproc_per_node 2 manage.py COMMAND`: its arguments."""
    arguments = [f"--{key.replace('_', '-')}={value}" for key, value in options.items()]
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",  # a free port of its own: parallel test runs do not collide
        "--nproc_per_node",
        "2",
        "manage.py",
        command,
        *arguments,
        *extra,
    ]


def launch(command: str, options: dict, env: dict[str, str], *extra: str) -> subprocess.CompletedProcess:
    result = subprocess.run(
        torchrun(command, options, *extra),
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=1200,  # generous: a busy CPU runs the two processes several times slower
    )
    if result.returncode != 0:
        errors = "\n".join(first_errors(result.stderr))
        pytest.fail(
            f"exit {result.returncode}; errors, first first:\n{errors}\nstderr's tail:\n{result.stderr[-3000:]}"
        )
    return result


def rows(env: dict[str, str], query: str, *parameters) -> list[tuple]:
    database = env["DATABASE_URL"].removeprefix("sqlite:///")
    with sqlite3.connect(database) as connection:
        return connection.execute(query, parameters).fetchall()


@pytest.fixture(scope="module")
def lora_options(tiny_model_dir) -> dict:
    # No dropout: its masks are drawn per process, so only then do 2 x 1 and 1 x 2 draw the same numbers.
    return {"model": str(tiny_model_dir), "resolution": 64, "epochs": 6, "learning_rate": 1e-3}


@pytest.fixture(scope="module")
def lora_two(tmp_path_factory, dataset_dir, environment, lora_options):
    """An uninterrupted LoRA run on 2 processes x batch 1: its folder and the launch's output."""
    output = tmp_path_factory.mktemp("two") / "lora"
    options = {**lora_options, "data": dataset_dir, "output": output, "batch_size": 1}
    return output, launch("train_lora", options, environment)


def assert_same_training(one: Path, two: Path, weights_file: str) -> dict[str, torch.Tensor]:
    """Same losses per epoch and same last weights, to float tolerance; returns the 2-process weights."""
    one_run, two_run = (json.loads((path / "run.json").read_text()) for path in (one, two))
    assert (one_run["processes"], two_run["processes"]) == (1, 2)
    assert one_run["global_batch"] == two_run["global_batch"] == 2
    assert len(two_run["epochs"]) == len(one_run["epochs"])
    for one_epoch, two_epoch in zip(one_run["epochs"], two_run["epochs"], strict=True):
        for key in ("train_loss", "val_loss"):
            if one_epoch[key] is None:  # epoch 0, before the first step, has no training loss
                assert two_epoch[key] is None, key
                continue
            assert two_epoch[key] == pytest.approx(one_epoch[key], rel=LOSS_RTOL), key
    expected, actual = load_file(one / "last" / weights_file), load_file(two / "last" / weights_file)
    assert expected.keys() == actual.keys()
    for key in expected:
        torch.testing.assert_close(actual[key], expected[key], **WEIGHT_TOLERANCE)
    return actual


def assert_moved(trained: torch.Tensor, initial: torch.Tensor) -> None:
    """Training moved the weights by far more than the tolerance, so runs that never stepped could not pass."""
    assert (trained - initial).abs().max() > 10 * WEIGHT_TOLERANCE["atol"]


@pytest.mark.slow
def test_lora_on_two_processes_matches_one_process_with_the_global_batch(
    tmp_path, dataset_dir, lora_two, lora_options
):
    two, _ = lora_two
    engine_train(dataset_dir, tmp_path / "one", build_config("lora", **lora_options, batch_size=2))
    weights = assert_same_training(tmp_path / "one", two, LORA_FILE)
    up = torch.cat([value.flatten() for key, value in weights.items() if ".lora_B." in key])
    assert_moved(up, torch.zeros_like(up))  # LoRA's up matrices start at zero


@pytest.mark.slow
def test_two_processes_write_one_set_of_files_and_one_database_row(lora_two, environment):
    output, launched = lora_two
    (run,) = rows(environment, "SELECT id, status, output_path FROM trainer_trainingrun")
    assert run[1:] == ("finished", str(output.resolve()))
    epochs = rows(
        environment, "SELECT epoch FROM trainer_epochmetric WHERE run_id = ? ORDER BY epoch", run[0]
    )
    assert [epoch for (epoch,) in epochs] == [1, 2, 3, 4, 5, 6]
    log = launched.stdout + launched.stderr
    assert launched.stdout.count(f"Training run {run[0]} finished") == 1
    assert all(log.count(f"epoch {epoch}/6: train loss") == 1 for epoch in range(1, 7))
    assert not list(output.glob(".*"))  # no staging folders or temporary files left by a second writer


@pytest.mark.slow
def test_ti_on_two_processes_matches_one_process_with_the_global_batch(
    tmp_path, dataset_dir, environment, tiny_model_dir
):
    options = {
        "model": str(tiny_model_dir),
        "resolution": 64,
        "epochs": 2,
        "learning_rate": 5e-3,
        "placeholder_token": "<gv>",
        "initializer_token": "style",
    }
    launch(
        "train_ti",
        {**options, "data": dataset_dir, "output": tmp_path / "two", "batch_size": 1},
        environment,
    )
    engine_train(dataset_dir, tmp_path / "one", build_config("ti", **options, batch_size=2))
    weights = assert_same_training(tmp_path / "one", tmp_path / "two", "learned_embeds.safetensors")
    from transformers import CLIPTextModel, CLIPTokenizer

    tokenizer = CLIPTokenizer.from_pretrained(tiny_model_dir / "tokenizer")
    (style,) = tokenizer("style", add_special_tokens=False).input_ids
    embeddings = CLIPTextModel.from_pretrained(tiny_model_dir / "text_encoder").get_input_embeddings()
    assert_moved(weights["<gv>"].flatten(), embeddings.weight[style].detach())  # it starts as "style"


@pytest.mark.slow
def test_lokr_on_two_processes_matches_one_process_with_the_global_batch(
    tmp_path, dataset_dir, environment, lora_options
):
    # rank 2 decomposes LoKr's larger factor: both of PEFT's LoKr parameter layouts train.
    options = {**lora_options, "epochs": 2, "rank": 2}
    launch(
        "train",
        {**options, "method": "lokr", "data": dataset_dir, "output": tmp_path / "two", "batch_size": 1},
        environment,
    )
    engine_train(dataset_dir, tmp_path / "one", build_config("lokr", **options, batch_size=2))
    weights = assert_same_training(tmp_path / "one", tmp_path / "two", "adapter_model.safetensors")
    small = torch.cat([value.flatten() for key, value in weights.items() if key.endswith(".lokr_w1")])
    assert_moved(small, torch.zeros_like(small))  # LoKr's small factor starts at zero


@pytest.mark.slow
def test_two_process_run_killed_after_a_checkpoint_resumes_on_two_to_the_uninterrupted_result(
    tmp_path, dataset_dir, environment, lora_two, lora_options
):
    killed = tmp_path / "killed"
    options = {**lora_options, "data": dataset_dir, "output": killed, "batch_size": 1}
    process = subprocess.Popen(
        torchrun("train_lora", options),
        cwd=REPO,
        env=environment,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 300
    while not (killed / "checkpoint.pt").exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    # torchrun starts its workers in sessions of their own: kill each training process, then torchrun.
    for child in psutil.Process(process.pid).children(recursive=True):
        child.send_signal(signal.SIGKILL)
    process.send_signal(signal.SIGKILL)
    process.wait()
    done = torch.load(killed / "checkpoint.pt", weights_only=False)["epochs_done"]
    assert 0 < done < lora_options["epochs"]  # killed mid-run, after a checkpoint

    with pytest.raises(
        UserInputError, match="with 1 process.*trained with 2; resume with `--num_processes 2`"
    ):
        engine_train(dataset_dir, killed, build_config("lora", **lora_options, batch_size=1), resume=True)

    launch("train_lora", options, environment, "--resume")
    reference, _ = lora_two
    expected_run, resumed_run = (json.loads((path / "run.json").read_text()) for path in (reference, killed))
    assert resumed_run["resumed_from_epoch"] == done
    assert [epoch["val_loss"] for epoch in resumed_run["epochs"]] == [
        epoch["val_loss"] for epoch in expected_run["epochs"]
    ]
    expected, actual = load_file(reference / "last" / LORA_FILE), load_file(killed / "last" / LORA_FILE)
    assert all(torch.equal(expected[key], actual[key]) for key in expected)


@pytest.mark.slow
def test_a_launched_training_that_refuses_its_input_fails_with_the_one_line(tmp_path, lora_options):
    # The parent (a job worker) gets the main process's UserInputError, not a launcher traceback.
    config = build_config("lora", **lora_options, batch_size=1)
    with pytest.raises(UserInputError, match=r"^dataset folder \S+missing does not exist; prepare one"):
        launch_training(tmp_path / "missing", tmp_path / "out", config, processes=2)


@pytest.mark.slow
@pytest.mark.parametrize(
    "method, extra, weights_file",
    [
        ("lora", {"learning_rate": 1e-3}, LORA_FILE),
        (
            "ti",
            {"learning_rate": 5e-3, "placeholder_token": "<ghiblivis-xl>", "initializer_token": "style"},
            "ghiblivis-xl.safetensors",
        ),
    ],
)
def test_sdxl_on_two_processes_matches_one_process_with_the_global_batch(
    tmp_path, dataset_dir, environment, tiny_sdxl_dir, method, extra, weights_file
):
    """SDXL's pooled embeddings and size-and-crop ids are shared out with the batch; TI's two encoders train
    as one module under DDP."""
    options = {"model": str(tiny_sdxl_dir), "resolution": 64, "epochs": 2, **extra}
    launch(
        f"train_{method}",
        {**options, "data": dataset_dir, "output": tmp_path / "two", "batch_size": 1},
        environment,
    )
    engine_train(dataset_dir, tmp_path / "one", build_config(method, **options, batch_size=2))
    weights = assert_same_training(tmp_path / "one", tmp_path / "two", weights_file)
    if method == "ti":
        assert {key: tuple(value.shape) for key, value in weights.items()} == {
            "clip_l": (1, 32),
            "clip_g": (1, 64),
        }
