"""Long captions: counted with the model's own tokenizer, and chunked as docs/training.md says when asked."""

import pytest
import torch

from peftlab.errors import UserInputError
from trainer.engine.config import build_config
from trainer.engine.data import caption_capacity, caption_token_counts
from trainer.engine.families import encode_text, tokenize


@pytest.fixture(scope="module")
def parts(tiny_model_dir):
    from transformers import CLIPTextModel, CLIPTokenizer

    tokenizer = CLIPTokenizer.from_pretrained(tiny_model_dir, subfolder="tokenizer")
    encoder = CLIPTextModel.from_pretrained(tiny_model_dir, subfolder="text_encoder").eval()
    return tokenizer, encoder


def long_caption(tokenizer, tokens: int) -> str:
    """A caption of at least `tokens` tokens (distinct words, so cut positions show)."""
    words, caption = 0, ""
    while len(tokenizer(caption, add_special_tokens=False).input_ids) < tokens:
        words += 1
        caption = " ".join(f"w{index}" for index in range(words))
    return caption


@pytest.mark.parametrize(("setting", "chunks"), [(77, 1), (150, 2), (225, 3)])
def test_chunks_are_framed_by_bos_and_eos_and_keep_the_caption_in_order(parts, setting, chunks):
    tokenizer, _ = parts
    caption = long_caption(tokenizer, 200)
    caption_ids = tokenizer(caption, add_special_tokens=False).input_ids
    ids = tokenize(tokenizer, [caption, "a tower"], setting)
    assert ids.shape == (2, chunks * 77)
    windows = ids.view(2, chunks, 77)
    assert (windows[:, :, 0] == tokenizer.bos_token_id).all()
    assert (windows[:, :, -1] == tokenizer.eos_token_id).all()
    kept = windows[0, :, 1:-1].flatten().tolist()
    # The first chunks x 75 tokens in order, nothing skipped; a shorter caption ends in EOS and padding.
    padded = caption_ids + [tokenizer.eos_token_id] + [tokenizer.pad_token_id] * 300
    assert kept == padded[: chunks * 75]
    if setting == 77:  # one window is exactly what the pipeline feeds the text encoder at inference
        pipeline = tokenizer(
            [caption, "a tower"], padding="max_length", max_length=77, truncation=True, return_tensors="pt"
        )
        assert torch.equal(ids, pipeline.input_ids)


def test_chunks_break_at_75_tokens_even_next_to_a_comma(parts):
    """No A1111 comma backtrack: a chunk holds exactly 75 caption tokens wherever the commas are."""
    tokenizer, encoder = parts
    caption = ", ".join(f"w{index} x{index}" for index in range(60))
    caption_ids = tokenizer(caption, add_special_tokens=False).input_ids
    comma = tokenizer.convert_tokens_to_ids(",</w>")
    assert comma in caption_ids[55:75]  # A1111 would end the first chunk at this comma
    ids = tokenize(tokenizer, [caption], 225)
    assert ids.view(3, 77)[:, 1:-1].flatten().tolist()[:150] == caption_ids[:150]
    with torch.no_grad():  # every chunk's BOS and EOS states kept: 231 positions, not kohya's 227
        assert encode_text(encoder, ids, 77).shape == (1, 231, 32)


def test_chunked_encoding_is_each_window_encoded_alone_then_concatenated(parts):
    tokenizer, encoder = parts
    ids = tokenize(tokenizer, [long_caption(tokenizer, 140)], 150)
    with torch.no_grad():
        states = encode_text(encoder, ids, 77)
        first, second = encoder(ids[:, :77])[0], encoder(ids[:, 77:])[0]
    assert states.shape == (1, 154, 32)
    assert torch.equal(states, torch.cat([first, second], dim=1))


def test_truncated_captions_are_counted_with_the_model_tokenizer(parts):
    tokenizer, _ = parts
    captions = [" ".join(["a"] * words) for words in (76, 75, 151, 1)]  # "a" is one token
    counts = caption_token_counts(tokenizer, captions)
    assert counts == [76, 75, 151, 1]
    assert sum(count > caption_capacity(tokenizer, 77) for count in counts) == 2
    assert sum(count > caption_capacity(tokenizer, 150) for count in counts) == 1
    assert sum(count > caption_capacity(tokenizer, 225) for count in counts) == 0


def test_other_caption_lengths_are_refused():
    with pytest.raises(UserInputError, match="--max-caption-tokens must be one of 77, 150, 225, got 100."):
        build_config("lora", max_caption_tokens=100)


def test_cache_entries_are_kept_apart_by_dtype_and_caption_length(tiny_model_dir, prepared_dir, tmp_path):
    """bf16 and fp32 encodings differ; one must never be served for the other."""
    from trainer.engine.data import (
        DiskCache,
        cached_latent_moments,
        cached_text_states,
        load_components,
        read_dataset,
    )

    cache = DiskCache(tmp_path / "cache")
    split = read_dataset(prepared_dir, "validation.txt")

    def entries() -> int:
        return len(list((tmp_path / "cache").rglob("*.safetensors")))

    cpu = torch.device("cpu")
    for dtype in (torch.float32, torch.bfloat16):
        parts = load_components(str(tiny_model_dir), dtype, dtype)
        cached_latent_moments(cache, parts, prepared_dir, split, 64, cpu, dtype)
        cached_text_states(cache, parts, split.captions, cpu, 77)
    assert entries() == 4 * len(split.images)
    float32 = load_components(str(tiny_model_dir))
    cached_text_states(cache, float32, split.captions, cpu, 150)
    assert entries() == 5 * len(split.images)
    again = cached_latent_moments(cache, float32, prepared_dir, split, 64, cpu, torch.float32)
    assert entries() == 5 * len(split.images)  # the same settings reuse their entries
    assert again.dtype == torch.float32
