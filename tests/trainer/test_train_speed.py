"""The fast step keeps the maths: the fused posterior sample, noise independent of the cache, TI's spliced
rows, TI's validation encoding each caption once and scoring max(images, timesteps) pairs, the precision
choice, and --compile."""

import json

import pytest
import torch
from safetensors.torch import load_file

from trainer.engine import loop
from trainer.engine.config import build_config
from trainer.engine.data import load_components
from trainer.engine.families import encode_text
from trainer.engine.loop import posterior_sample, resolve_mixed_precision, scaled_moments, validation_pairs
from trainer.engine.loop import train as engine_train
from trainer.engine.methods import SplicedEmbedding, make_method

SCALE = 0.18215


def test_fused_posterior_sample_matches_diffusers_within_float_rounding():
    from diffusers.models.autoencoders.vae import DiagonalGaussianDistribution

    moments = torch.randn(3, 8, 8, 8, generator=torch.Generator().manual_seed(0))
    moments[:, 4:] *= 3  # log-variances, some beyond the clamp at 20 / -30 after scaling below
    moments[0, 4:] = 40.0
    torch.manual_seed(1)
    expected = DiagonalGaussianDistribution(moments).sample() * SCALE
    torch.manual_seed(1)
    actual = posterior_sample(*scaled_moments(moments, SCALE))
    # Same draw; (mean + std * eps) * scale and mean * scale + (std * scale) * eps round differently.
    torch.testing.assert_close(actual, expected, rtol=1e-6, atol=1e-6)
    assert torch.equal(
        scaled_moments(moments, SCALE)[0], DiagonalGaussianDistribution(moments).mode() * SCALE
    )


def test_posterior_sample_does_not_depend_on_memory_layout():
    moments = torch.randn(2, 8, 8, 8, generator=torch.Generator().manual_seed(0))
    channels_last = moments.contiguous(memory_format=torch.channels_last)  # how the VAE returns them on CPU
    torch.manual_seed(3)
    expected = posterior_sample(*scaled_moments(moments, SCALE))
    torch.manual_seed(3)
    assert torch.equal(posterior_sample(*scaled_moments(channels_last, SCALE)), expected)


@pytest.fixture
def fake_cuda(monkeypatch):
    """A visible CUDA device whose bf16 support the test sets (the precision choice reads only these)."""
    monkeypatch.delenv("ACCELERATE_USE_CPU", raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *args: "Test GPU")

    def with_bf16(supported: bool) -> None:
        monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: supported)

    return with_bf16


@pytest.mark.parametrize("bf16, expected", [(True, "bf16"), (False, "fp16")])
def test_auto_precision_on_cuda_is_bf16_where_supported_else_fp16(fake_cuda, bf16, expected):
    fake_cuda(bf16)
    precision, reason = resolve_mixed_precision("auto")
    assert precision == expected and "Test GPU" in reason
    assert resolve_mixed_precision("no")[0] == "no"  # an explicit choice is kept


def test_auto_precision_is_float32_without_cuda_or_when_accelerate_is_told_cpu(fake_cuda, monkeypatch):
    fake_cuda(True)
    monkeypatch.setenv("ACCELERATE_USE_CPU", "1")
    assert resolve_mixed_precision("auto")[0] == "no"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.delenv("ACCELERATE_USE_CPU")
    assert resolve_mixed_precision("auto")[0] == "no"


def test_ti_gradients_and_clip_see_only_the_new_rows(tiny_model_dir):
    config = build_config(
        "ti", model=str(tiny_model_dir), placeholder_token="<gv>", initializer_token="style", num_vectors=2
    )
    method, parts = make_method(config), load_components(str(tiny_model_dir))
    method.setup(parts)
    encoder = parts.text_encoder
    embeddings = encoder.get_input_embeddings()
    assert isinstance(embeddings, SplicedEmbedding)
    assert [p for p in encoder.parameters() if p.requires_grad] == [embeddings.rows]
    assert embeddings.rows.shape == (2, 32)

    # The same caption through a plain copy of the table that trains as a whole (the old way).
    plain = torch.nn.Embedding.from_pretrained(embeddings.weight.detach().clone(), freeze=False)
    ids = parts.tokenizer(["a tower in <gv> <gv>_1 style"], return_tensors="pt").input_ids
    assert torch.equal(embeddings(ids), plain(ids))  # splicing changes no value
    target = torch.randn(*ids.shape, 32, generator=torch.Generator().manual_seed(0))
    (embeddings(ids) * target).sum().backward()
    (plain(ids) * target).sum().backward()
    assert torch.equal(embeddings.rows.grad, plain.weight.grad[method.token_ids])
    # The whole table's gradient has rows of the caption's other tokens; the clip must not count them.
    assert plain.weight.grad.norm() > embeddings.rows.grad.norm()
    norm = torch.nn.utils.clip_grad_norm_([p for p in encoder.parameters() if p.requires_grad], 1e-3)
    assert torch.equal(norm, plain.weight.grad[method.token_ids].norm())


@pytest.mark.parametrize(("images", "timesteps"), [(1, 10), (11, 10), (12, 4), (3, 7), (5, 5)])
def test_validation_pairs_cover_every_image_and_timestep_in_max_not_product_forwards(images, timesteps):
    image, timestep = validation_pairs(images, timesteps, 1000)
    spaced = torch.linspace(0, 999, timesteps).round().long()
    assert len(image) == len(timestep) == max(images, timesteps)
    image_counts = torch.bincount(image, minlength=images)
    timestep_counts = torch.stack([(timestep == value).sum() for value in spaced])
    for counts in (image_counts, timestep_counts):
        assert counts.min() >= 1 and counts.max() - counts.min() <= 1  # all scored, none favoured
    # Each image meets distinct timesteps (spread over the schedule), not the same one again.
    for index in range(images):
        mine = timestep[image == index]
        assert len(set(mine.tolist())) == len(mine)


def loss_pair_by_pair(trainer: loop.Trainer) -> float:
    """The validation loss scored one (image, timestep) pair at a time, the pair's caption encoded for it."""
    window = trainer.components.tokenizer.model_max_length
    losses = []
    with torch.no_grad():
        for pair, (image, timestep) in enumerate(zip(trainer.val_images, trainer.val_timesteps, strict=True)):
            ids = trainer.val_ids[image : image + 1, 0]  # the one text encoder's ids
            states = encode_text(trainer.components.text_encoder, ids, window)
            latents, noise = trainer.val_latents[image][None], trainer.val_noise[pair][None]
            losses.append(trainer.loss(latents, states, noise, timestep[None]).item())
    return sum(losses) / len(losses)


@pytest.mark.slow
def test_ti_validation_encodes_each_caption_once_and_scores_each_image_with_its_own(
    tmp_path, prepared_dir, fast_options, monkeypatch
):
    # Batch size 1: the 5 pairs (2 images, 5 timesteps) take two validation batches of 4, the 2 captions
    # one encoding.
    options = {**fast_options, "epochs": 1, "batch_size": 1}
    config = build_config(
        "ti", **options, placeholder_token="<gv>", initializer_token="style", validation_timesteps=5
    )
    passes = []
    validation_loss = loop.Trainer.validation_loss

    def watched(trainer: loop.Trainer) -> float:
        calls = []
        hook = trainer.components.text_encoder.register_forward_hook(lambda *_: calls.append(1))
        value = validation_loss(trainer)
        hook.remove()
        passes.append((len(calls), value, loss_pair_by_pair(trainer)))
        return value

    monkeypatch.setattr(loop.Trainer, "validation_loss", watched)
    engine_train(prepared_dir, tmp_path / "ti", config)
    assert len(passes) == 2  # epoch 0 and epoch 1
    for calls, value, expected in passes:
        assert calls == 1
        assert value == pytest.approx(expected, rel=1e-5)


@pytest.mark.slow
def test_cache_on_and_off_train_the_same_weights(tmp_path, prepared_dir, fast_options, caplog):
    runs = {}
    for cache in (True, False):
        config = build_config(
            "lora", **fast_options, learning_rate=1e-3, cache=cache, cache_dir=str(tmp_path)
        )
        with caplog.at_level("INFO", logger=loop.logger.name):
            result = engine_train(prepared_dir, tmp_path / f"cache-{cache}", config)
        runs[cache] = (
            result,
            load_file(tmp_path / f"cache-{cache}" / "last" / "pytorch_lora_weights.safetensors"),
        )
    (cached, cached_weights), (encoded, encoded_weights) = runs[True], runs[False]
    assert [e.train_loss for e in cached.epochs] == [e.train_loss for e in encoded.epochs]
    assert cached_weights.keys() == encoded_weights.keys()
    assert all(torch.equal(cached_weights[key], encoded_weights[key]) for key in cached_weights)
    # --mixed-precision auto (the default) on a CPU: float32, said and recorded.
    assert "mixed precision: no (auto: no CUDA device, float32)" in caplog.text
    assert json.loads((tmp_path / "cache-True" / "run.json").read_text())["mixed_precision"] == "no"


@pytest.mark.slow
def test_compiled_unet_trains_and_saves_like_the_plain_one(tmp_path, prepared_dir, fast_options, monkeypatch):
    # Dynamo traces the UNet for real; inductor's backend would build C++ for minutes on a CPU, so the
    # test hands the graphs to the eager backend, which runs the same operations.
    compiled = []
    compile_module = torch.nn.Module.compile

    def eager_compile(module, *args, **kwargs):
        compiled.append(type(module).__name__)
        compile_module(module, *args, backend="eager", **kwargs)

    monkeypatch.setattr(torch.nn.Module, "compile", eager_compile)
    weights = {}
    for compile in (False, True):
        config = build_config("lora", **{**fast_options, "epochs": 1}, learning_rate=1e-3, compile=compile)
        engine_train(prepared_dir, tmp_path / str(compile), config)
        weights[compile] = load_file(tmp_path / str(compile) / "last" / "pytorch_lora_weights.safetensors")
    assert compiled == ["UNet2DConditionModel"]
    assert weights[True].keys() == weights[False].keys()
    assert all(torch.equal(weights[True][key], weights[False][key]) for key in weights[False])
