"""Generation with the tiny SDXL model: the SDXL pipeline, its native size, base/LoRA/TI arms through the
effect checks, a study built and analysed from them, and files of the other family refused in one line."""

from pathlib import Path

import pytest

from generation.engine import AdapterArm, GenerationConfig, PromptItem, Renderer, generate
from generation.engine_adapters import detect_adapter
from peftlab.errors import UserInputError

TOKEN = "<ghiblivis-xl>"


def sdxl_config(model: Path, *adapters: AdapterArm, **overrides) -> GenerationConfig:
    """A quick rendering of base and `adapters`: 64 px, 3 steps, seeds 0 and 1."""
    return GenerationConfig(
        model=str(model),
        arms=("base", *(adapter.name for adapter in adapters)),
        adapters=adapters,
        seeds=(0, 1),
        steps=3,
        width=64,
        height=64,
        **overrides,
    )


def sdxl_arms(runs: dict[str, Path], lora: str = "lora_kohya.safetensors") -> tuple[AdapterArm, ...]:
    """The trained SDXL LoRA (its kohya file by default) and TI (its run folder: the clip_l/clip_g file)."""
    return (
        AdapterArm.detect("lora", str(runs["lora"] / lora if lora else runs["lora"])),
        AdapterArm.detect("ti", str(runs["ti"]), token=TOKEN),
    )


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
    # 150 tokens: the chunked encoding through both encoders, the pooled embedding included.
    config = sdxl_config(tiny_sdxl_dir, *sdxl_arms(tiny_sdxl_runs), max_caption_tokens=150)
    # The TI run folder resolves to its clip_l/clip_g file, not to one encoder's learned_embeds.safetensors.
    assert detect_adapter(Path(config.adapter("ti").path)).weights.name == "ghiblivis-xl.safetensors"
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
    sdxl_ti = tiny_sdxl_runs["ti"]
    cases = [
        (tiny_sdxl_dir, "lora", adapters["diffusers"], "is an SD 1.x LoRA but the model is SDXL"),
        (tiny_sdxl_dir, "lora", adapters["kohya"], "is an SD 1.x LoRA but the model is SDXL"),
        (tiny_sdxl_dir, "lora", adapters["peft"], "is an SD 1.x LoRA but the model is SDXL"),
        (tiny_sdxl_dir, "ti", adapters["ti_a1111"], "is an SD 1.x embedding but the model is SDXL"),
        (tiny_model_dir, "lora", tiny_sdxl_runs["lora"], "is an SDXL LoRA but the model is SD 1.x"),
        (
            tiny_model_dir,
            "lora",
            tiny_sdxl_runs["lora"] / "lora_kohya.safetensors",
            "is an SDXL LoRA but the model is SD 1.x",
        ),
        (tiny_model_dir, "ti", sdxl_ti, "is an SDXL embedding but the model is SD 1.x"),
        (
            tiny_sdxl_dir,
            "ti",
            sdxl_ti / "learned_embeds_2.safetensors",
            "holds the vectors of one of SDXL's two text encoders",
        ),
    ]
    for model, name, path, message in cases:
        arm = AdapterArm.detect(name, str(path), token="<a>" if name == "ti" else None)
        with pytest.raises(UserInputError, match=message) as refused:
            Renderer(sdxl_config(model, arm))
        assert "\n" not in str(refused.value)


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
        config=sdxl_config(tiny_sdxl_dir, *sdxl_arms(tiny_sdxl_runs, lora="")),
        name="sdxl: base vs LoRA vs TI",
    )
    assert run.images.count() == 12 and set(run.effects) == {"lora", "ti"}
    study = study_create_from_generation(run=run, arms=["base", "lora", "ti"], status=Study.Status.OPEN)
    simulate_participants(study=study, count=6, preferred_arm="lora", seed=0)
    files = study_report_write(study=study, output_dir=tmp_path / "report")
    assert (tmp_path / "report" / "report.json").is_file() and files
