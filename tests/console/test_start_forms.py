"""The training, generation and study forms reject bad input without starting anything, and enqueue on success."""

from pathlib import Path

import pytest
from django.urls import reverse
from PIL import Image

from generation.models import PromptSet
from peftlab.models import Job
from studies.models import Study
from trainer.engine.config import LoraTrainingConfig, TiTrainingConfig
from trainer.engine.dataset import PrepareConfig
from trainer.models import Dataset, TrainingRun
from trainer.services import dataset_prepare

pytestmark = pytest.mark.django_db


@pytest.fixture
def dataset(tmp_path) -> Dataset:
    return Dataset.objects.create(
        name="d",
        path=str(tmp_path / "d"),
        source_path="/src",
        manifest_sha256="0" * 64,
        resolution=64,
        num_pairs=4,
        num_train=3,
        num_validation=1,
        num_skipped=0,
    )


def post(client, name: str, data: dict) -> str:
    response = client.post(reverse(f"console:{name}"), data)
    assert response.status_code == 200, response.get("Location")
    return response.content.decode()


def test_training_form_rejects_bad_hyperparameters(staff_client, dataset, tiny_model_dir):
    base = {
        "dataset": dataset.pk,
        "method": "lora",
        "model": str(tiny_model_dir),
        "output_name": "r1",
        "epochs": 1,
        "batch_size": 1,
        "learning_rate": 1e-4,
        "resolution": 64,
        "seed": 0,
        "rank": 4,
        "processes": 1,
    }
    assert "multiple of 8" in post(staff_client, "training_new", base | {"resolution": 60})
    assert "greater than or equal to 1" in post(staff_client, "training_new", base | {"epochs": 0})
    assert "placeholder-token is required" in post(staff_client, "training_new", base | {"method": "ti"})
    assert "Select a valid choice" in post(staff_client, "training_new", base | {"method": "dreambooth"})
    processes = post(staff_client, "training_new", base | {"processes": 0})
    assert "greater than or equal to 1" in processes and "This field is required" not in processes
    assert not Job.objects.exists()


def test_generation_form_rejects_bad_input(staff_client, tiny_model_dir, tmp_path):
    prompt_set = PromptSet.objects.create(name="s")
    prompt_set.prompts.create(landmark="Big Ben", text="Big Ben")
    base = {"prompt_set": prompt_set.pk, "model": str(tiny_model_dir), "seeds": "0,1", "steps": 2, "size": 64}
    assert "comma-separated integers" in post(staff_client, "generation_new", base | {"seeds": "0,x"})
    assert "does not exist" in post(staff_client, "generation_new", base | {"model": str(tmp_path / "none")})
    assert "multiples of 8" in post(staff_client, "generation_new", base | {"size": 60})
    assert not Job.objects.exists()
    with_commit = staff_client.post(reverse("console:generation_new"), base)
    job = Job.objects.get()
    assert with_commit["Location"] == reverse("console:job_detail", args=[job.pk])
    assert job.kind == "generation" and job.queue == "gpu" and job.run.arms == ["base"]


def finished_run(method: str, output: Path, files: dict | None = None) -> TrainingRun:
    return TrainingRun.objects.create(
        method=method,
        dataset_path="/d",
        output_path=str(output),
        config={},
        status="finished",
        files=files or {},
    )


def test_generation_form_offers_finished_runs_of_every_method(staff_client, tiny_model_dir, tmp_path):
    """A run's method decides what is loaded: the peft folder of a LoHa run, the embedding of a TI run."""
    import torch
    from diffusers import UNet2DConditionModel
    from peft import LoHaConfig, get_peft_model
    from safetensors.torch import save_file

    unet = UNet2DConditionModel.from_pretrained(tiny_model_dir, subfolder="unet")
    loha = get_peft_model(unet, LoHaConfig(r=2, alpha=2, target_modules=["to_q"]))
    loha.save_pretrained(tmp_path / "loha")
    embedding = tmp_path / "ti" / "learned_embeds.safetensors"
    embedding.parent.mkdir()
    save_file({"<tok>": torch.ones(32)}, embedding, metadata={"placeholder_token": "<tok>"})
    runs = [
        finished_run("loha", tmp_path / "loha"),
        finished_run("loha", tmp_path / "loha"),
        finished_run("ti", embedding.parent, {"learned_embeds.safetensors": str(embedding)}),
    ]
    TrainingRun.objects.create(method="lora", dataset_path="/d", output_path="/o", config={}, status="failed")
    page = staff_client.get(reverse("console:generation_new")).content.decode()
    assert page.count('name="adapter_runs"') == 3 and "Textual Inversion run" in page
    prompt_set = PromptSet.objects.create(name="s")
    prompt_set.prompts.create(landmark="Big Ben", text="Big Ben")
    base = {"prompt_set": prompt_set.pk, "model": str(tiny_model_dir), "seeds": "0", "steps": 2, "size": 64}
    staff_client.post(reverse("console:generation_new"), base | {"adapter_runs": [run.pk for run in runs]})
    generation = Job.objects.get().run
    first, second = (f"loha-{run.pk}" for run in runs[:2])
    assert generation.arms == ["base", first, second, "ti"]
    assert [(a["name"], a["method"], a["format"], a["token"]) for a in generation.adapters] == [
        (first, "loha", "peft", None),
        (second, "loha", "peft", None),
        ("ti", "ti", "embedding", "<tok>"),
    ]
    assert generation.adapters[2]["path"] == str(embedding)


def test_generation_form_refuses_more_than_six_adapters(staff_client, tiny_model_dir, tmp_path):
    runs = [finished_run("lora", tmp_path / f"r{index}") for index in range(7)]
    prompt_set = PromptSet.objects.create(name="s")
    base = {"prompt_set": prompt_set.pk, "model": str(tiny_model_dir), "seeds": "0", "steps": 2, "size": 64}
    page = post(staff_client, "generation_new", base | {"adapter_runs": [run.pk for run in runs]})
    assert "7 runs chosen; a generation run compares the base model with at most 6." in page
    assert not Job.objects.exists()


def test_study_builder_needs_a_run_and_a_free_slug(staff_client, run):
    picker = staff_client.get(reverse("console:study_new"), {"generation_run": 999}).content.decode()
    assert "Select a valid choice" in picker and "Create the study" not in picker
    Study.objects.create(title="t", slug="taken", generation_run=run, consent_text="c", instructions="i")
    url = f"{reverse('console:study_new')}?generation_run={run.pk}"
    page = staff_client.post(url, {"title": "t", "slug": "taken", "arms": ["base", "lora"]}).content.decode()
    assert "a study with slug &#x27;taken&#x27; already exists" in page
    assert "valid “slug”" in staff_client.post(url, {"title": "t", "slug": "a b"}).content.decode()
    assert Study.objects.count() == 1 and not Job.objects.exists()


@pytest.fixture
def prepared_dataset(tmp_path) -> Dataset:
    """A real prepared dataset of four small captioned images."""
    source = tmp_path / "images"
    source.mkdir()
    for index in range(4):
        Image.new("RGB", (64, 64), (60 * index, 90, 200)).save(source / f"image{index}.png")
        (source / f"image{index}.txt").write_text(f"ghiblivis picture {index}", encoding="utf-8")
    dataset_prepare(
        source=source, output=tmp_path / "dataset", config=PrepareConfig(resolution=64, min_size=0)
    )
    return Dataset.objects.get()


@pytest.mark.parametrize("method", ["lora", "ti"])
def test_training_form_without_a_learning_rate_uses_the_methods_default(
    method, staff_client, prepared_dataset, tiny_model_dir, settings, tmp_path
):
    settings.PEFTLAB_DATA_DIR = tmp_path / "data"
    data = {
        "dataset": prepared_dataset.pk,
        "method": method,
        "model": str(tiny_model_dir),
        "output_name": f"run-{method}",
        "epochs": 1,
        "batch_size": 1,
        "resolution": 64,
        "seed": 0,
        "rank": 4,
        "processes": 1,
        "placeholder_token": "<ghibli>",
        "initializer_token": "style",
    }
    response = staff_client.post(reverse("console:training_new"), data)
    assert response.status_code == 302, response.content.decode()[-2000:]
    expected = {"lora": LoraTrainingConfig, "ti": TiTrainingConfig}[method].learning_rate
    assert Job.objects.get().run.config["learning_rate"] == expected


@pytest.mark.parametrize(
    ("method", "typed", "expected"),
    [
        ("dora", {"rank": 8}, {"rank": 8, "alpha": 8.0, "dropout": 0.0}),
        ("loha", {}, {"rank": 8, "alpha": 8.0, "rank_dropout": 0.0, "module_dropout": 0.0}),
        (
            "loha",
            {"rank": 2, "alpha": 1, "module_dropout": 0.1},
            {"rank": 2, "alpha": 1.0, "module_dropout": 0.1},
        ),
        ("lokr", {"factor": 4, "rank_dropout": 0.2}, {"rank": 8, "factor": 4, "rank_dropout": 0.2}),
        ("oft", {"block_size": 16, "rank": 3}, {"block_size": 16, "cayley_neumann": True}),
    ],
)
def test_training_form_offers_every_method_with_its_options(
    method, typed, expected, staff_client, prepared_dataset, tiny_model_dir, settings, tmp_path
):
    settings.PEFTLAB_DATA_DIR = tmp_path / "data"
    data = {
        "dataset": prepared_dataset.pk,
        "method": method,
        "model": str(tiny_model_dir),
        "output_name": f"run-{method}",
        "epochs": 1,
        "batch_size": 1,
        "resolution": 64,
        "seed": 0,
        "processes": 1,
        "max_caption_tokens": "77",
    }
    form = staff_client.get(reverse("console:training_new")).content.decode()
    assert all(f'value="{name}"' in form for name in ("lora", "dora", "loha", "lokr", "oft", "ti"))
    response = staff_client.post(reverse("console:training_new"), data | typed)
    assert response.status_code == 302, response.content.decode()[-2000:]
    config = Job.objects.get().run.config
    assert config["method"] == method and config | expected == config
    if method == "oft":
        assert "rank" not in config  # an option the method lacks is not passed on


def test_training_form_refuses_a_bad_method_option(staff_client, dataset, tiny_model_dir):
    data = {
        "dataset": dataset.pk,
        "method": "loha",
        "model": str(tiny_model_dir),
        "output_name": "r1",
        "epochs": 1,
        "batch_size": 1,
        "resolution": 64,
        "seed": 0,
        "processes": 1,
    }
    assert "--module-dropout must be in [0, 1), got 1.5" in post(
        staff_client, "training_new", data | {"module_dropout": 1.5}
    )
    assert "--factor must be -1 or a positive integer" in post(
        staff_client, "training_new", data | {"method": "lokr", "factor": 0}
    )
    assert not Job.objects.exists()


# The tiny tokenizer spells "word" in 4 tokens: 25 of them are 100 tokens, more than one 75-token window.
@pytest.mark.parametrize(("captions", "expected"), [(["short caption"], 77), (["word " * 25], 150)])
def test_training_form_measures_the_captions_for_max_caption_tokens(
    staff_client, tiny_model_dir, settings, tmp_path, captions, expected
):
    source = tmp_path / "images"
    source.mkdir()
    for index in range(4):
        Image.new("RGB", (64, 64), (60 * index, 90, 200)).save(source / f"image{index}.png")
        (source / f"image{index}.txt").write_text(captions[0] + f" {index}", encoding="utf-8")
    dataset_prepare(
        source=source, output=tmp_path / "dataset", config=PrepareConfig(resolution=64, min_size=0)
    )
    settings.PEFTLAB_DATA_DIR = tmp_path / "data"
    data = {
        "dataset": Dataset.objects.get().pk,
        "method": "lora",
        "model": str(tiny_model_dir),
        "output_name": "run",
        "epochs": 1,
        "batch_size": 1,
        "resolution": 64,
        "seed": 0,
        "rank": 4,
        "processes": 1,
        "max_caption_tokens": "",
    }
    response = staff_client.post(reverse("console:training_new"), data, follow=True)
    assert Job.objects.get().run.config["max_caption_tokens"] == expected
    assert f"max caption tokens {expected}." in response.content.decode()
    Job.objects.all().delete()
    chosen = staff_client.post(
        reverse("console:training_new"), data | {"max_caption_tokens": "225", "output_name": "b"}
    )
    assert chosen.status_code == 302 and Job.objects.get().run.config["max_caption_tokens"] == 225
