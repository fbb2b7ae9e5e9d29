"""train_ti end to end on the tiny model: only the new rows train; diffusers and A1111 files load."""

import numpy as np
import pytest
import torch
from django.core.management import call_command
from safetensors.torch import load_file

from trainer.models import TrainingRun

pytestmark = [pytest.mark.slow, pytest.mark.django_db]
TOKEN = "<ghiblivis-style>"


@pytest.fixture(scope="module")
def ti_run(django_db_setup, django_db_blocker, tmp_path_factory, prepared_dir, fast_options):
    """One two-epoch TI run with two vectors, through the command."""
    output = tmp_path_factory.mktemp("ti") / "out"
    with django_db_blocker.unblock():
        call_command(
            "train_ti",
            data=prepared_dir,
            output=output,
            placeholder_token=TOKEN,
            initializer_token="style",
            num_vectors=2,
            learning_rate=5e-2,
            **fast_options,
        )
        run = TrainingRun.objects.get(output_path=str(output.resolve()))
    yield output, run
    with django_db_blocker.unblock():
        run.delete()  # made outside the tests' transactions, so not rolled back with them


def test_ti_changes_only_the_new_embedding_rows(ti_run, tiny_model_dir):
    from transformers import CLIPTextModel, CLIPTokenizer

    output, run = ti_run
    assert run.status == TrainingRun.Status.FINISHED and run.epochs.count() == 2
    base = (
        CLIPTextModel.from_pretrained(tiny_model_dir, subfolder="text_encoder").get_input_embeddings().weight
    )
    style = CLIPTokenizer.from_pretrained(tiny_model_dir, subfolder="tokenizer").convert_tokens_to_ids(
        "style"
    )
    trained = torch.load(output / "checkpoint.pt", weights_only=False)["trainable"]["embeddings"]
    assert trained.shape == (base.shape[0] + 2, base.shape[1])
    assert torch.equal(trained[: base.shape[0]], base.detach())  # every old row bit-identical
    assert not torch.equal(trained[-1], base[style].detach())  # the new rows moved off their initializer
    learned = load_file(output / "last" / "learned_embeds.safetensors")
    assert list(learned) == [TOKEN] and torch.equal(learned[TOKEN], trained[-2:])


def test_ti_loads_in_stock_diffusers_and_changes_the_image(ti_run, tiny_model_dir):
    from diffusers import StableDiffusionPipeline

    output, _ = ti_run
    pipe = StableDiffusionPipeline.from_pretrained(tiny_model_dir, safety_checker=None)
    pipe.set_progress_bar_config(disable=True)

    def render() -> np.ndarray:
        generator = torch.Generator().manual_seed(0)
        return pipe(
            f"a tower in {TOKEN}",
            num_inference_steps=2,
            height=64,
            width=64,
            generator=generator,
            output_type="np",
        ).images[0]

    base = render()
    pipe.load_textual_inversion(output / "learned_embeds.safetensors", token=TOKEN)
    assert TOKEN in pipe.tokenizer.get_vocab() and f"{TOKEN}_1" in pipe.tokenizer.get_vocab()
    assert not np.array_equal(render(), base)


def test_ti_a1111_file_holds_emb_params(ti_run):
    output, _ = ti_run
    a1111 = load_file(output / "ghiblivis-style.safetensors")
    learned = load_file(output / "learned_embeds.safetensors")[TOKEN]
    assert list(a1111) == ["emb_params"] and torch.equal(a1111["emb_params"], learned)
    assert a1111["emb_params"].shape == (2, 32)
