"""The generation engine: identical noise across arms and runs, every adapter format, the effect check."""

import re
from pathlib import Path

import numpy as np
import pytest

from generation.engine import AdapterArm, GenerationConfig, PromptItem, generate
from peftlab.errors import UserInputError

PROMPTS = [
    PromptItem(key=1, text="big ben clock tower at sunset"),
    PromptItem(key=2, text="the colosseum in rome", negative_prompt="people"),
]


def render(model: Path, **settings) -> dict[tuple[str, int, int], np.ndarray]:
    """Images of a tiny 64x64, 2-step rendering, keyed by (arm, prompt key, seed)."""
    config = GenerationConfig(
        model=str(model), seeds=(0, 1), steps=2, width=64, height=64, batch_size=3, **settings
    )
    images: dict[tuple[str, int, int], np.ndarray] = {}
    generate(
        config,
        PROMPTS,
        lambda image: images.__setitem__(
            (image.arm, image.prompt_key, image.seed), np.asarray(image.image, dtype=np.float32)
        ),
    )
    return images


def lora_arm(path: Path, **settings) -> dict:
    """The settings of a run whose one adapter arm, `lora`, loads `path`."""
    return {"adapters": (AdapterArm.detect("lora", str(path), **settings),)}


def mean_difference(first: np.ndarray, second: np.ndarray) -> float:
    return float(np.abs(first - second).mean())


@pytest.mark.slow
def test_same_seed_renders_identical_base_images_across_runs(tiny_model_dir):
    first = render(tiny_model_dir)
    second = render(tiny_model_dir)
    assert first.keys() == {("base", key, seed) for key in (1, 2) for seed in (0, 1)}
    for key, image in first.items():
        assert np.array_equal(image, second[key]), key
    # Different seeds of one prompt are different images.
    assert mean_difference(first[("base", 1, 0)], first[("base", 1, 1)]) > 1


@pytest.mark.slow
@pytest.mark.parametrize("lora_format", ["diffusers", "peft", "kohya"])
def test_every_lora_format_changes_the_image_and_base_stays_untouched(tiny_model_dir, adapters, lora_format):
    plain = render(tiny_model_dir)
    images = render(tiny_model_dir, arms=("base", "lora"), **lora_arm(adapters[lora_format]))
    for key, seed in [(1, 0), (2, 1)]:
        # The base arm in a run with a LoRA loaded is exactly the base model ...
        assert np.array_equal(images[("base", key, seed)], plain[("base", key, seed)])
        # ... and the LoRA arm, from the same noise, differs.
        assert mean_difference(images[("lora", key, seed)], images[("base", key, seed)]) > 0.5


@pytest.mark.slow
@pytest.mark.parametrize("ti_file", ["ti", "ti_a1111"])
def test_ti_arm_differs_from_base(tiny_model_dir, adapters, ti_file):
    adapter = AdapterArm.detect("ti", str(adapters[ti_file]), token="<peftlab-ti>")
    images = render(tiny_model_dir, arms=("base", "ti"), adapters=(adapter,))
    assert mean_difference(images[("ti", 1, 0)], images[("base", 1, 0)]) > 0.5


@pytest.mark.slow
def test_zero_effect_lora_is_refused_before_any_image(tiny_model_dir, adapters):
    config = GenerationConfig(
        model=str(tiny_model_dir),
        arms=("base", "lora"),
        **lora_arm(adapters["zero"]),
        steps=2,
        width=64,
        height=64,
    )
    handed_out = []
    with pytest.raises(
        UserInputError, match="had no visible effect.*differs from the same adapter switched off by 0.000"
    ):
        generate(config, PROMPTS, handed_out.append)
    assert handed_out == []


def ti_config(model: Path, path: Path, token: str, initializer: str | None = None) -> GenerationConfig:
    return GenerationConfig(
        model=str(model),
        arms=("base", "ti"),
        adapters=(AdapterArm.detect("ti", str(path), token=token, initializer=initializer),),
        steps=2,
        width=64,
        height=64,
    )


@pytest.mark.slow
@pytest.mark.parametrize(
    ("adapter", "message"),
    [
        ("ti_zero", "ti_zero.safetensors holds an all-zero vector: it was never trained."),
        (
            "ti_copy",
            "ti_copy.safetensors equals the model's own embedding of 'style</w>': it is an untrained copy.",
        ),
        (
            "ti_nudged",
            "had no visible effect: its probe render differs from the same adapter with its "
            "initializer's vector by 0.000",
        ),
        (
            "ti_foreign_copy",
            "ti_foreign_copy.safetensors vector 0 lies within 0.00056",
        ),
    ],
)
def test_untrained_embeddings_are_refused_before_any_image(tiny_model_dir, adapters, adapter, message):
    """Inserting a token changes the image whatever its vector; only the learned difference may pass."""
    handed_out = []
    with pytest.raises(UserInputError, match=re.escape(message)):
        generate(ti_config(tiny_model_dir, adapters[adapter], "<t>"), PROMPTS, handed_out.append)
    assert handed_out == []


@pytest.mark.slow
def test_foreign_embedding_is_checked_against_the_whole_table(tiny_model_dir, adapters, caplog):
    """A downloaded embedding names no initializer: its reference is each vector's nearest row."""
    images = []
    with caplog.at_level("INFO", logger="generation.engine_adapters"):
        result = generate(
            ti_config(tiny_model_dir, adapters["ti_unknown"], "<t>"), PROMPTS[:1], images.append
        )
    assert result.effects["ti"] > 0.5 and len(images) == 2
    assert re.search(r"ti_unknown.safetensors vector 0: nearest token '.+' at distance \d", caplog.text)


@pytest.mark.slow
def test_ti_initializer_can_be_given_for_a_foreign_embedding(tiny_model_dir, adapters):
    images = []
    config = ti_config(tiny_model_dir, adapters["ti_unknown"], "<t>", initializer="style")
    result = generate(config, PROMPTS[:1], images.append)
    assert result.effects["ti"] > 0.5 and len(images) == 2


@pytest.mark.slow
def test_lora_scale_changes_the_lora_arm_only(tiny_model_dir, adapters):
    full = render(tiny_model_dir, arms=("base", "lora"), **lora_arm(adapters["diffusers"]))
    half = render(tiny_model_dir, arms=("base", "lora"), **lora_arm(adapters["diffusers"], scale=0.5))
    assert np.array_equal(full[("base", 1, 0)], half[("base", 1, 0)])
    base_to_full = mean_difference(full[("lora", 1, 0)], full[("base", 1, 0)])
    assert 0 < mean_difference(half[("lora", 1, 0)], full[("base", 1, 0)]) < base_to_full


@pytest.mark.slow
def test_wrong_width_embedding_names_both_widths(tiny_model_dir, adapters):
    config = GenerationConfig(
        model=str(tiny_model_dir),
        arms=("ti",),
        adapters=(AdapterArm.detect("ti", str(adapters["ti_wide"]), token="<w>"),),
        steps=2,
        width=64,
        height=64,
    )
    with pytest.raises(UserInputError) as raised:
        generate(config, PROMPTS, lambda image: None)
    assert str(raised.value) == "embedding wide.safetensors: expected width 32, file has 768."


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"arms": ("base", "lora")}, "--arms must be distinct names from base, every adapter's"),
        ({"arms": ("base", "sdxl")}, "--arms must be distinct names"),
        ({"scheduler": "heun9"}, "--scheduler must be one of dpmsolver\\+\\+"),
        (
            {"templates": {"ti": "{prompt}"}},
            "a template is given for arm 'ti', which this run does not render",
        ),
        ({"templates": {"base": "a {subject}"}}, "only {prompt} and {token} exist"),
        ({"width": 60}, "--size must be multiples of 8"),
        ({"safety_checker": "maybe"}, "--safety-checker must be on or off"),
    ],
)
def test_config_refuses_bad_settings_in_one_line(tiny_model_dir, overrides, message):
    with pytest.raises(UserInputError, match=message):
        GenerationConfig(model=str(tiny_model_dir), **overrides)


def test_peft_weights_file_alone_is_refused(tiny_model_dir, adapters):
    with pytest.raises(UserInputError, match="pass its folder"):
        GenerationConfig(
            model=str(tiny_model_dir),
            arms=("lora",),
            **lora_arm(adapters["peft"] / "adapter_model.safetensors"),
        )


@pytest.mark.slow
@pytest.mark.parametrize("scheduler", ["ddim", "euler_a"])
def test_other_schedulers_are_reproducible_per_seed(tiny_model_dir, scheduler):
    first = render(tiny_model_dir, scheduler=scheduler)
    second = render(tiny_model_dir, scheduler=scheduler)
    assert all(np.array_equal(image, second[key]) for key, image in first.items())
    # The ancestral sampler draws fresh noise each step from the image's own generator, so it is
    # reproducible too, and differs from the default scheduler's image.
    assert mean_difference(first[("base", 1, 0)], render(tiny_model_dir)[("base", 1, 0)]) > 0


def long_prompts(tail: str) -> list[PromptItem]:
    """One prompt of 80 one-token words, then `tail`: the tail lies past the 75 tokens of one window."""
    return [PromptItem(key=1, text=" ".join(["a"] * 80) + f" {tail}")]


@pytest.mark.slow
def test_long_prompts_keep_their_tail_only_with_chunked_encoding(tiny_model_dir):
    def image(tail: str, tokens: int | None) -> np.ndarray:
        config = GenerationConfig(
            model=str(tiny_model_dir), steps=2, width=64, height=64, max_caption_tokens=tokens
        )
        images = []
        generate(config, long_prompts(tail), images.append)
        assert images[0].parameters["max_caption_tokens"] == (tokens or 77)
        return np.asarray(images[0].image, dtype=np.float32)

    # One window cuts the tail away: two prompts that differ only there render the same image ...
    assert np.array_equal(image("tower", None), image("castle bridge", None))
    # ... two chunks encode it, as training with --max-caption-tokens 150 did.
    assert mean_difference(image("tower", 150), image("castle bridge", 150)) > 0.5


@pytest.mark.slow
def test_lora_arm_encodes_prompts_as_its_run_trained(tiny_model_dir, adapters, tmp_path):
    import json
    import shutil

    folder = tmp_path / "lora"
    shutil.copytree(adapters["diffusers"], folder)
    (folder / "run.json").write_text(json.dumps({"config": {"max_caption_tokens": 150}}))
    config = GenerationConfig(
        model=str(tiny_model_dir), arms=("base", "lora"), **lora_arm(folder), steps=2, width=64, height=64
    )
    images = {}
    generate(config, PROMPTS[:1], lambda image: images.__setitem__(image.arm, image))
    assert images["lora"].parameters["max_caption_tokens"] == 150
    assert images["base"].parameters["max_caption_tokens"] == 77


@pytest.mark.slow
def test_images_flagged_by_the_safety_checker_are_recorded_and_fail_the_run(tiny_model_dir, monkeypatch):
    """A real SD-1.5 checker blacks out flagged images; stand one in that flags the second seed."""
    import torch
    from transformers import BatchFeature

    from generation import engine

    load = engine.load_pipeline

    def with_checker(config, device, dtype):
        pipe = load(config, device, dtype)
        pipe.feature_extractor = lambda images, return_tensors: BatchFeature(
            {"pixel_values": torch.zeros(len(images), 3, 8, 8)}
        )
        pipe.safety_checker = lambda images, clip_input: (images * 0, [False, True][: len(images)])
        return pipe

    monkeypatch.setattr(engine, "load_pipeline", with_checker)
    config = GenerationConfig(model=str(tiny_model_dir), seeds=(0, 1), steps=2, width=64, height=64)
    handed_out = []
    with pytest.raises(
        UserInputError, match=r"the safety checker flagged 1 of 2 images \(e.g. arm base, prompt 1, seed 1\)"
    ):
        generate(config, PROMPTS[:1], handed_out.append)
    assert [image.parameters["nsfw_content_detected"] for image in handed_out] == [False, True]
    assert {image.parameters["safety_checker"] for image in handed_out} == {"on"}


def test_lora_that_loads_only_in_part_is_refused(tiny_model_dir, adapters):
    """The file diffusers' converter writes for proj_in/proj_out: stock loading wraps 8 of its 40 modules."""
    from generation.engine import Renderer

    config = GenerationConfig(model=str(tiny_model_dir), arms=("base", "lora"), **lora_arm(adapters["mixed"]))
    with pytest.raises(UserInputError, match=r"loaded only 8 of its 40 modules into this model"):
        Renderer(config)


def lora_file_variant(adapters, tmp_path, name: str, change) -> Path:
    """A copy of the diffusers test LoRA (header kept) with `change(state)` applied to its tensors."""
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    source = adapters["diffusers"] / "pytorch_lora_weights.safetensors"
    with safe_open(source, framework="pt") as handle:
        metadata = handle.metadata()
    state = load_file(source)
    change(state)
    folder = tmp_path / name
    folder.mkdir()
    save_file(state, folder / "pytorch_lora_weights.safetensors", metadata=metadata)
    return folder


def last_up_key(state) -> str:
    """The up matrix of the module that sorts last: a check that looks at the first module misses it."""
    return sorted(key for key in state if key.endswith("lora.up.weight"))[-1]


def refused_line(config: GenerationConfig, match: str) -> str:
    """The one-line refusal of loading `config`'s adapters."""
    from generation.engine import Renderer

    with pytest.raises(UserInputError, match=match) as error:
        Renderer(config)
    assert "\n" not in str(error.value)
    return str(error.value)


@pytest.mark.parametrize(
    ("values", "problem"),
    [
        ("one NaN", ": vector 0 holds 1 NaN or Inf of its 32 values"),
        ("all NaN", ": vector 0 holds 32 NaN or Inf of its 32 values"),
        ("one Inf", ": vector 1 holds 1 NaN or Inf of its 32 values"),
        ("all 1e30", " in use: vector 1 has norm inf, more than 1000 times the model's largest"),
    ],
)
def test_non_finite_embeddings_are_refused_as_not_finite(tiny_model_dir, tmp_path, values, problem):
    """A NaN sum compares true and 1e30 squared overflows: neither may reach a study as black images."""
    import torch
    from safetensors.torch import save_file

    torch.manual_seed(0)
    vectors = torch.randn(2, 32) * 3
    if values == "one NaN":
        vectors[0, 5] = float("nan")
    elif values == "all NaN":
        vectors[0] = float("nan")
    elif values == "one Inf":
        vectors[1, 7] = float("inf")
    else:
        vectors[1] = 1e30
    path = tmp_path / "bad.safetensors"
    save_file({"emb_params": vectors}, path, metadata={"initializer_token": "style"})
    refused_line(ti_config(tiny_model_dir, path, "<t>"), re.escape(f"bad.safetensors is not finite{problem}"))


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_non_finite_lora_is_refused_naming_the_tensor(tiny_model_dir, adapters, tmp_path, value):
    def poison(state):
        state[last_up_key(state)][3, 1] = value

    from safetensors.torch import load_file

    folder = lora_file_variant(adapters, tmp_path, "poisoned", poison)
    key = last_up_key(load_file(folder / "pytorch_lora_weights.safetensors"))
    config = GenerationConfig(model=str(tiny_model_dir), arms=("base", "lora"), **lora_arm(folder))
    refused_line(config, re.escape(f"is not finite: tensor {key} holds 1 NaN or Inf values"))


def test_lora_without_one_up_matrix_is_refused_before_loading(tiny_model_dir, adapters, tmp_path):
    """Stock diffusers leaves the missing matrix on the meta device and the UNet computes NaN."""
    folder = lora_file_variant(adapters, tmp_path, "half", lambda state: state.pop(last_up_key(state)))
    config = GenerationConfig(model=str(tiny_model_dir), arms=("base", "lora"), **lora_arm(folder))
    refused_line(
        config,
        r"half/pytorch_lora_weights.safetensors is incomplete: module unet\.up_blocks\.1\..*attn2\.to_v has its down \(A\) matrix but no up "
        r"\(B\) matrix",
    )


def test_parameter_left_on_the_meta_device_is_refused(tiny_model_dir, adapters, tmp_path):
    """Whatever the file check lets through, a load that leaves a parameter without values is refused."""
    from diffusers import StableDiffusionPipeline

    from trainer.engine.proof import refuse_meta_parameters

    folder = lora_file_variant(adapters, tmp_path, "half", lambda state: state.pop(last_up_key(state)))
    pipe = StableDiffusionPipeline.from_pretrained(tiny_model_dir, safety_checker=None)
    pipe.load_lora_weights(folder, adapter_name="lora")
    with pytest.raises(
        UserInputError, match=r"left unet\.up_blocks\.1\..*to_v\.lora_B\.lora\.weight without values"
    ):
        refuse_meta_parameters(pipe, folder)


def test_lora_of_another_rank_than_its_header_names_the_shapes(tiny_model_dir, adapters, tmp_path):
    """torch's message starts `Error(s) in loading state_dict`; the shapes are on the lines below it."""
    import torch

    def double_rank(state):
        for key, value in state.items():
            state[key] = torch.cat([value, value], dim=0 if ".down." in key else 1)

    folder = lora_file_variant(adapters, tmp_path, "rank8", double_rank)
    config = GenerationConfig(model=str(tiny_model_dir), arms=("base", "lora"), **lora_arm(folder))
    refused_line(
        config,
        r"does not fit this model: size mismatch for .*: copying a param with shape torch\.Size\(\[8, 32\]\) "
        r"from checkpoint, the shape in current model is torch\.Size\(\[4, 32\]\)",
    )


def test_peft_folder_of_another_rank_names_the_shapes(tiny_model_dir, adapters, tmp_path):
    import json
    import shutil

    folder = tmp_path / "peft"
    shutil.copytree(adapters["peft"], folder)
    config_file = folder / "adapter_config.json"
    config_file.write_text(json.dumps(json.loads(config_file.read_text()) | {"r": 8}))
    config = GenerationConfig(model=str(tiny_model_dir), arms=("base", "lora"), **lora_arm(folder))
    refused_line(config, r"does not fit this model's UNet: size mismatch for .*torch\.Size\(\[4, 32\]\)")


@pytest.mark.slow
def test_lora_whose_product_overflows_renders_no_image(tiny_model_dir, adapters, tmp_path):
    """Every value finite, but 1e30 x 1e30 is Inf in float32: the render is NaN, which PIL would make black."""

    def huge(state):
        for value in state.values():
            value.fill_(1e30)

    folder = lora_file_variant(adapters, tmp_path, "huge", huge)
    config = GenerationConfig(
        model=str(tiny_model_dir), arms=("base", "lora"), **lora_arm(folder), steps=2, width=64, height=64
    )
    handed_out = []
    with pytest.raises(
        UserInputError, match=r"the lora arm with lora adapter .*huge rendered non-finite \(NaN or Inf\)"
    ):
        generate(config, PROMPTS, handed_out.append)
    assert handed_out == []


@pytest.mark.slow
def test_flat_probe_is_not_counted_as_an_effect(tiny_model_dir, adapters, monkeypatch):
    """A black probe differs from any picture by a lot; that is a broken adapter, not what it learned."""
    from PIL import Image

    from generation.engine import Renderer

    render_batch = Renderer.render_batch

    def black_when_trained(self, arm, texts, negatives, seeds, untrained=False):
        images, flags = render_batch(self, arm, texts, negatives, seeds, untrained)
        if arm == "lora" and not untrained:
            images = [Image.new("RGB", image.size) for image in images]
        return images, flags

    monkeypatch.setattr(Renderer, "render_batch", black_when_trained)
    config = GenerationConfig(
        model=str(tiny_model_dir),
        arms=("base", "lora"),
        **lora_arm(adapters["diffusers"]),
        steps=2,
        width=64,
        height=64,
    )
    with pytest.raises(UserInputError, match="renders the probe as one flat colour"):
        generate(config, PROMPTS, lambda image: None)
