"""Adapters of every method in one run (base + up to six arms), and the refusals: a dead adapter, a file with
a module cut out or with keys the model lacks, a LyCORIS file, and settings that do not fit an arm."""

import io
import re
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from generation.engine import AdapterArm, GenerationConfig, PromptItem, Renderer, generate
from peftlab.errors import UserInputError

PROMPTS = [PromptItem(key=1, text="big ben clock tower at sunset")]
METHODS = {"dora": "dora", "dora_diffusers": "dora", "loha": "loha", "lokr": "lokr", "oft": "oft"}
PEFT_METHODS = ["dora", "loha", "lokr", "oft"]
# Two tiny epochs at a learning rate that moves each method's weights far enough to show in a 64x64 render.
TRAINED_OPTIONS = {
    "dora": {"rank": 4, "alpha": 4.0, "learning_rate": 1e-2},
    "loha": {"rank": 4, "learning_rate": 5e-2},
    "lokr": {"factor": 4, "learning_rate": 5e-2},
    "oft": {"block_size": 8, "learning_rate": 1e-2},
}


def config(model: Path, paths: dict[str, Path], *names: str, **settings) -> GenerationConfig:
    """A 64x64, 2-step run of the base model and the adapters `names` (each arm named as its adapter)."""
    adapters = tuple(AdapterArm.detect(name, str(paths[name])) for name in names)
    return GenerationConfig(
        model=str(model),
        arms=("base", *names),
        adapters=adapters,
        steps=2,
        width=64,
        height=64,
        **settings,
    )


def render(config: GenerationConfig) -> tuple[dict[str, np.ndarray], dict[str, float], dict]:
    """(image per arm, effects, image parameters per arm) of a one-prompt, one-seed run."""
    images, parameters = {}, {}

    def keep(image) -> None:
        images[image.arm] = np.asarray(image.image, dtype=np.float32)
        parameters[image.arm] = image.parameters

    result = generate(config, PROMPTS, keep)
    return images, result.effects, parameters


def refused(config: GenerationConfig, match: str) -> str:
    """The one-line refusal of loading `config`'s adapters."""
    with pytest.raises(UserInputError, match=match) as error:
        Renderer(config)
    assert "\n" not in str(error.value)
    return str(error.value)


@pytest.fixture(params=["sd15", "sdxl"])
def family_arms(request) -> tuple[Path, dict[str, Path], Callable[[], tuple[Path, str]]]:
    """Per family (ids sd15, sdxl): the tiny model, its adapters of every method (`method_adapters`), and a
    function giving a trained TI embedding with the token it is detected by (SDXL's is trained on first use)."""
    if request.param == "sd15":
        return (
            request.getfixturevalue("tiny_model_dir"),
            request.getfixturevalue("method_adapters"),
            lambda: (request.getfixturevalue("adapters")["ti"], "<peftlab-ti>"),
        )
    # The SDXL TI run's folder: its clip_l/clip_g file carries the token in its header.
    return (
        request.getfixturevalue("tiny_sdxl_dir"),
        request.getfixturevalue("sdxl_method_adapters"),
        lambda: (request.getfixturevalue("tiny_sdxl_runs")["ti"], "<ghiblivis-xl>"),
    )


@pytest.mark.slow
def test_six_adapters_of_every_method_render_in_one_run(family_arms):
    """Base + DoRA (peft and diffusers files of the same weights), LoHa, LoKr, OFT and TI on one UNet, on SD 1.x
    and on SDXL."""
    model, paths, ti = family_arms
    embedding, token = ti()
    paths = {**paths, "ti": embedding}
    names = [*METHODS, "ti"]
    images, effects, parameters = render(config(model, paths, *names))
    plain, _, _ = render(config(model, paths))
    assert list(images) == ["base", *names]
    # The base arm is the base model, whatever adapters are loaded beside it ...
    assert np.array_equal(images["base"], plain["base"])
    for name in names:
        # ... each adapter arm differs from it, from the same noise, and proved its effect first.
        assert np.abs(images[name] - images["base"]).mean() > 0.5, name
        assert effects[name] > 0.5, name
    # The same DoRA weights through peft's folder and diffusers' stock loader render the same image.
    assert np.abs(images["dora"] - images["dora_diffusers"]).max() <= 1
    # An arm renders alone as it does among five other adapters: only its own adapter acts.
    alone, _, _ = render(config(model, paths, "oft"))
    assert np.array_equal(alone["oft"], images["oft"])
    assert {arm: (p.get("method"), p.get("format")) for arm, p in parameters.items()} == {
        "base": (None, None),
        "dora": ("dora", "peft"),
        "dora_diffusers": ("dora", "diffusers"),
        "loha": ("loha", "peft"),
        "lokr": ("lokr", "peft"),
        "oft": ("oft", "peft"),
        "ti": ("ti", "embedding"),
    }
    # The TI token came from the file: the diffusers file's key (SD 1.x), the clip_l/clip_g file's header (SDXL).
    assert parameters["ti"]["token"] == token and parameters["loha"]["adapter"] == str(paths["loha"])


@pytest.mark.slow
@pytest.mark.parametrize("name", list(METHODS))
def test_dead_adapter_of_every_method_is_refused_before_any_image(family_arms, name):
    """peft's own initialisation changes nothing (zero LoRA B / LoHa / LoKr factor, identity OFT rotation)."""
    model, paths, _ = family_arms
    dead = f"{name}_dead"
    handed_out = []
    with pytest.raises(UserInputError) as error:
        generate(config(model, paths, dead), PROMPTS, handed_out.append)
    assert re.match(
        rf"the {dead} adapter \S+ \({METHODS[name]}\) had no visible effect: its probe render differs from the "
        r"same adapter switched off by 0\.0",
        str(error.value),
    )
    assert handed_out == []


def peft_variant(folder: Path, tmp_path: Path, change) -> Path:
    """A copy of a peft adapter folder with `change(state)` applied to its adapter_model.safetensors."""
    from safetensors.torch import load_file, save_file

    copy = tmp_path / folder.name
    shutil.copytree(folder, copy)
    state = load_file(copy / "adapter_model.safetensors")
    change(state)
    save_file(state, copy / "adapter_model.safetensors")
    return copy


def last_module(state) -> str:
    """The module whose keys sort last (a check that looks at the first module misses it)."""
    return sorted(state)[-1].rsplit(".", 2)[0].removesuffix(".oft_R").removesuffix(".lora_A")


def cut_last_module(state) -> None:
    module = last_module(state)
    for key in [key for key in state if key.startswith(module + ".")]:
        del state[key]


def rename_last_module(state) -> None:
    """The last module's keys point at a layer the model does not have (to_q -> to_z and so on)."""
    module = last_module(state)
    for key in [key for key in state if key.startswith(module + ".")]:
        state[key.replace(module, module[:-1] + "z")] = state.pop(key)


@pytest.mark.parametrize("method", PEFT_METHODS)
def test_peft_adapter_with_a_module_cut_out_is_refused(family_arms, tmp_path, method):
    model, paths, _ = family_arms
    folder = peft_variant(paths[method], tmp_path, cut_last_module)
    refused(
        config(model, {method: folder}, method),
        r"peft adapter \S+ does not fit this model's UNet \(0 unexpected, [1-9]\d* missing keys, e.g. .*up_blocks",
    )


@pytest.mark.parametrize("method", PEFT_METHODS)
def test_peft_adapter_with_keys_the_model_lacks_is_refused(family_arms, tmp_path, method):
    model, paths, _ = family_arms
    folder = peft_variant(paths[method], tmp_path, rename_last_module)
    refused(
        config(model, {method: folder}, method),
        r"peft adapter \S+ does not fit this model's UNet \([1-9]\d* unexpected, [1-9]\d* missing keys",
    )


def diffusers_variant(folder: Path, tmp_path: Path, change) -> Path:
    """A copy of a diffusers LoRA folder (header kept) with `change(state)` applied to its tensors."""
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    source = folder / "pytorch_lora_weights.safetensors"
    with safe_open(source, framework="pt") as handle:
        metadata = handle.metadata()
    state = load_file(source)
    change(state)
    copy = tmp_path / folder.name
    copy.mkdir()
    save_file(state, copy / "pytorch_lora_weights.safetensors", metadata=metadata)
    return copy


def test_dora_file_with_a_module_cut_out_is_refused(tiny_model_dir, method_adapters, tmp_path):
    """Stock diffusers loads the other modules without a word; the header's target_modules say one is gone."""

    def cut(state) -> None:
        module = sorted(state)[-1].removesuffix(".lora_magnitude_vector").rsplit(".lora.", 1)[0]
        for key in [key for key in state if key.startswith(module + ".")]:
            del state[key]

    folder = diffusers_variant(method_adapters["dora_diffusers"], tmp_path, cut)
    refused(
        config(tiny_model_dir, {"dora": folder}, "dora"),
        r"adapts 31 of the 32 UNet modules its header's target_modules name; modules were cut from the file",
    )


def test_dora_file_with_keys_the_model_lacks_is_refused(tiny_model_dir, method_adapters, tmp_path):
    def rename(state) -> None:
        module = sorted(state)[-1].removesuffix(".lora_magnitude_vector").rsplit(".lora.", 1)[0]
        for key in [key for key in state if key.startswith(module + ".")]:
            state[key.replace(module, module[:-1] + "z")] = state.pop(key)

    folder = diffusers_variant(method_adapters["dora_diffusers"], tmp_path, rename)
    refused(
        config(tiny_model_dir, {"dora": folder}, "dora"), r"loaded only 31 of its 32 modules into this model"
    )


def test_peftlab_run_folders_are_detected_for_every_method(method_adapters, adapters, tmp_path):
    """A run's best/ holds the peft folder (LoHa, LoKr, OFT), the diffusers file (LoRA, DoRA) or the
    embedding (TI): the folder alone says which method it is."""
    ti_run = tmp_path / "ti" / "best"
    ti_run.mkdir(parents=True)
    shutil.copy(adapters["ti"], ti_run / "learned_embeds.safetensors")
    found = {
        name: (arm.method, arm.format, arm.token)
        for name, path in {**method_adapters, "lora": adapters["diffusers"], "ti": ti_run}.items()
        if not name.endswith("_dead")
        for arm in [AdapterArm.detect(name, str(path))]
    }
    assert found == {
        "dora": ("dora", "peft", None),
        "dora_diffusers": ("dora", "diffusers", None),
        "loha": ("loha", "peft", None),
        "lokr": ("lokr", "peft", None),
        "oft": ("oft", "peft", None),
        "lora": ("lora", "diffusers", None),
        "ti": ("ti", "embedding", "<peftlab-ti>"),
    }


def test_embedding_that_names_no_token_takes_the_arms_name(adapters):
    assert AdapterArm.detect("style", str(adapters["ti_a1111"])).token == "<style>"
    assert AdapterArm.detect("style", str(adapters["ti_a1111"]), token="<mine>").token == "<mine>"


def test_ti_arms_template_must_place_its_token(tiny_model_dir, adapters):
    """Which arm is TI is known once the run's adapters are: a prompt file's template is checked then."""
    arm = AdapterArm.detect("style", str(adapters["ti"]))
    settings = {"model": str(tiny_model_dir), "arms": ("base", "style"), "adapters": (arm,)}
    with pytest.raises(
        UserInputError, match="template '{prompt} only' of TI arm 'style' must contain {token}"
    ):
        GenerationConfig(**settings, templates={"style": "{prompt} only"})
    prompt = PromptItem(key=1, text="x", templates={"style": "{prompt}, painted"})
    with pytest.raises(UserInputError, match="of TI arm 'style' must contain {token}"):
        generate(GenerationConfig(**settings), [prompt], lambda image: None)


def test_lycoris_single_file_is_refused_with_the_folder_to_give(tmp_path):
    import torch
    from safetensors.torch import save_file

    name = "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q"
    path = tmp_path / "loha.safetensors"
    save_file({f"{name}.{key}": torch.ones(4, 4) for key in ("hada_w1_a", "hada_w1_b")}, path)
    with pytest.raises(
        UserInputError, match="is a LyCORIS LoHa file, which generation does not read; pass the"
    ):
        AdapterArm.detect("loha", str(path))


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (
            lambda p: [AdapterArm.detect(f"a{i}", str(p["loha"])) for i in range(7)],
            "7 adapters given; .* at most 6",
        ),
        (lambda p: [AdapterArm.detect("x", str(p["loha"]))] * 2, "two adapters are named 'x'"),
        (lambda p: [AdapterArm.detect("base", str(p["loha"]))], "arm name 'base' is the base model's"),
        (lambda p: [AdapterArm.detect("LoHa", str(p["loha"]))], "arm name 'LoHa' must be 1-30 lower-case"),
        (lambda p: [AdapterArm.detect("oft", str(p["oft"]), scale=0.5)], "a oft adapter has no scale"),
        (
            lambda p: [AdapterArm.detect("loha", str(p["loha"]), token="<t>")],
            "a token and an initializer belong",
        ),
        (
            lambda p: [AdapterArm.detect("loha", str(p["loha"]), scale=0.0)],
            "the scale must be a positive number",
        ),
    ],
)
def test_adapter_arms_that_do_not_fit_are_refused_in_one_line(
    tiny_model_dir, method_adapters, build, message
):
    with pytest.raises(UserInputError, match=message) as error:
        adapters = tuple(build(method_adapters))
        GenerationConfig(
            model=str(tiny_model_dir),
            arms=("base", *dict.fromkeys(a.name for a in adapters)),
            adapters=adapters,
        )
    assert "\n" not in str(error.value)


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--adapter", "dora"], "--adapter takes NAME=VALUE, got 'dora'."),
        (["--adapter", "lora={loha}", "--lora", "{loha}"], "arm 'lora' is given twice"),
        (["--adapter", "a={loha}", "--adapter", "a={oft}"], "--adapter names arm 'a' twice."),
        (
            ["--adapter", "a={loha}", "--adapter-token", "b=<t>"],
            "a token is given for arm 'b', which no --adapter",
        ),
        (["--token", "<t>"], "--token needs --ti"),
        (["--adapter", "a={oft}", "--adapter-scale", "a=half"], "--adapter-scale takes NAME=NUMBER"),
        (["--adapter", "a={oft}", "--template", "b={{prompt}}"], "a template is given for arm 'b'"),
    ],
)
def test_generate_refuses_adapter_options_that_do_not_fit(
    tiny_model_dir, method_adapters, arguments, message
):
    from django.core.management import CommandError, call_command

    from generation.models import GenerationRun

    filled = [argument.format(**{k: str(v) for k, v in method_adapters.items()}) for argument in arguments]
    with pytest.raises(CommandError) as error:
        call_command("generate", "--model", str(tiny_model_dir), *filled)
    assert message in str(error.value) and "\n" not in str(error.value)
    assert not GenerationRun.objects.exists()


@pytest.mark.slow
@pytest.mark.django_db
@pytest.mark.parametrize("method", ["dora", "loha", "lokr", "oft"])
def test_a_trained_runs_best_folder_generates_for_every_method(
    method, tmp_path, prepared_dir, fast_options, family_model_dir
):
    """What peftlab's trainer writes (DoRA: the diffusers file; LoHa, LoKr, OFT: the peft folder beside the
    LyCORIS file) on an SD 1.x or SDXL model loads by its folder alone and passes the effect check."""
    from django.core.management import call_command

    from generation.models import GenerationRun

    output = tmp_path / "run"
    options = fast_options | {"model": str(family_model_dir)} | TRAINED_OPTIONS[method]
    call_command("train", method=method, data=prepared_dir, output=output, stdout=io.StringIO(), **options)
    prompts = tmp_path / "one.csv"
    prompts.write_text("landmark,text\nBig Ben,big ben clock tower\n")
    call_command("load_prompts", str(prompts), stdout=io.StringIO())
    call_command(
        "generate",
        "--model", str(family_model_dir),
        "--adapter", f"{method}={output / 'best'}",
        "--prompts", "one",
        "--steps", "2",
        "--size", "64",
        stdout=io.StringIO(),
    )  # fmt: skip
    run = GenerationRun.objects.get()
    assert run.status == GenerationRun.Status.FINISHED and run.effects[method] > 0.5
    assert run.adapters[0]["method"] == method
