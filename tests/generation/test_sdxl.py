"""Generation with the tiny SDXL model: the SDXL pipeline, its native size, base/LoRA/TI arms through the
effect checks, a study built and analysed from them, and files of the other family refused in one line."""

from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from generation.engine import GenerationConfig, PromptItem, Renderer, generate
from peftlab.errors import UserInputError

TOKEN = "<ghiblivis-xl>"


def sdxl_config(model: Path, **overrides) -> GenerationConfig:
    """A quick SDXL rendering: 64 px, 3 steps, seeds 0 and 1."""
    return GenerationConfig(model=str(model), seeds=(0, 1), steps=3, width=64, height=64, **overrides)


def test_the_default_size_is_the_family_native_size(tiny_sdxl_dir, tiny_model_dir):
    assert (
        GenerationConfig(model=str(tiny_sdxl_dir)).width,
        GenerationConfig(model=str(tiny_sdxl_dir)).height,
    ) == (
        1024,
        1024,
    )
    assert GenerationConfig(model=str(tiny_model_dir)).width == 512
    assert GenerationConfig(model=str(tiny_sdxl_dir), width=64, height=128).height == 128


@pytest.mark.slow
def test_sdxl_arms_pass_the_effect_checks_with_the_same_seeds(tiny_sdxl_runs, tiny_sdxl_dir):
    config = sdxl_config(
        tiny_sdxl_dir,
        arms=("base", "lora", "ti"),
        lora=str(tiny_sdxl_runs["lora"] / "lora_kohya.safetensors"),
        ti=str(tiny_sdxl_runs["ti"] / "ghiblivis-xl.safetensors"),
        token=TOKEN,
        max_caption_tokens=150,  # the chunked encoding through both encoders, pooled included
    )
    images = []
    result = generate(config, [PromptItem(1, "a red castle at sunset")], images.append)
    assert result.images == 6
    assert set(result.effects) == {"lora", "ti"} and min(result.effects.values()) > config.effect_threshold
    by_arm = {(image.arm, image.seed): image for image in images}
    assert {image.image.size for image in images} == {(64, 64)}
    # The base arm renders the base model: the same seed gives another image in each adapter arm.
    assert by_arm["base", 0].image.tobytes() != by_arm["lora", 0].image.tobytes()
    assert by_arm["base", 0].image.tobytes() != by_arm["base", 1].image.tobytes()


@pytest.mark.slow
def test_files_of_the_other_family_are_refused_in_one_line(
    tiny_sdxl_runs, tiny_sdxl_dir, tiny_model_dir, adapters
):
    sd15_embedding = adapters["ti_a1111"]
    cases = [
        (tiny_sdxl_dir, {"lora": str(adapters["diffusers"])}, "is an SD 1.x LoRA but the model is SDXL"),
        (tiny_sdxl_dir, {"lora": str(adapters["kohya"])}, "is an SD 1.x LoRA but the model is SDXL"),
        (
            tiny_sdxl_dir,
            {"ti": str(sd15_embedding), "token": "<a>"},
            "is an SD 1.x embedding but the model is SDXL",
        ),
        (tiny_model_dir, {"lora": str(tiny_sdxl_runs["lora"])}, "is an SDXL LoRA but the model is SD 1.x"),
        (
            tiny_model_dir,
            {"lora": str(tiny_sdxl_runs["lora"] / "lora_kohya.safetensors")},
            "is an SDXL LoRA but the model is SD 1.x",
        ),
        (
            tiny_model_dir,
            {"ti": str(tiny_sdxl_runs["ti"] / "ghiblivis-xl.safetensors"), "token": "<a>"},
            "is an SDXL embedding but the model is SD 1.x",
        ),
        (
            tiny_sdxl_dir,
            {"ti": str(tiny_sdxl_runs["ti"] / "learned_embeds_2.safetensors"), "token": "<a>"},
            "holds the vectors of one of SDXL's two text encoders",
        ),
    ]
    for model, adapter, message in cases:
        arms = ("base", "lora" if "lora" in adapter else "ti")
        with pytest.raises(UserInputError, match=message) as refused:
            Renderer(sdxl_config(model, arms=arms, **adapter))
        assert "\n" not in str(refused.value)


@pytest.mark.slow
def test_an_sdxl_embedding_without_clip_g_is_refused(tiny_sdxl_dir, tmp_path):
    path = tmp_path / "only-l.safetensors"
    save_file({"clip_l": torch.randn(1, 32) * 3, "clip_x": torch.randn(1, 64) * 3}, path)
    with pytest.raises(UserInputError, match="entries"):
        Renderer(sdxl_config(tiny_sdxl_dir, arms=("base", "ti"), ti=str(path), token="<a>"))


@pytest.mark.slow
@pytest.mark.django_db
def test_a_study_is_built_and_analysed_from_an_sdxl_generation_run(
    tiny_sdxl_runs, tiny_sdxl_dir, tmp_path, settings
):
    from analysis.services import study_report_write
    from console.demo import simulate_participants
    from generation.services import generation_run_render, prompt_set_load
    from studies.models import Study
    from studies.services import study_create_from_generation

    settings.MEDIA_ROOT = tmp_path / "media"
    prompts = tmp_path / "two.csv"
    prompts.write_text("landmark,text\nBig Ben,big ben clock tower\nPetra,petra stone temple\n")
    run = generation_run_render(
        prompt_set=prompt_set_load(path=prompts),
        config=sdxl_config(
            tiny_sdxl_dir,
            arms=("base", "lora", "ti"),
            lora=str(tiny_sdxl_runs["lora"]),
            ti=str(tiny_sdxl_runs["ti"] / "ghiblivis-xl.safetensors"),
            token=TOKEN,
        ),
        name="sdxl: base vs LoRA vs TI",
    )
    assert run.images.count() == 12 and set(run.effects) == {"lora", "ti"}
    study = study_create_from_generation(run=run, arms=["base", "lora", "ti"], status=Study.Status.OPEN)
    simulate_participants(study=study, count=6, preferred_arm="lora", seed=0)
    files = study_report_write(study=study, output_dir=tmp_path / "report")
    assert (tmp_path / "report" / "report.json").is_file() and files
