"""A real study (the seed-study stimuli) answered by bot participants through the studies services."""

import pytest

from studies.models import Participant


def answer_study(study, participants: int, careless: int = 0) -> None:
    """Participants who prefer LoRA (most of them), each answering every page; the first `careless` fail checks."""
    from studies.services import ExternalIds, participant_answer_all, participant_start

    for number in range(participants):

        def choose(participant, page, number=number):
            left = participant.sides[str(page.trial.pk)]
            if page.question is None:  # an attention check
                expected = page.trial.expected_choice
                return ({"left": "right", "right": "left"}[expected]) if number < careless else expected
            if "neither" in page.choices and number % 4 == 0:
                return "neither"
            prefers_lora = number % 5 != 1
            return "left" if (left == "lora") == prefers_lora else "right"

        participant = participant_start(
            study=study,
            ids=ExternalIds(external_id=f"PROLIFIC{number:03d}", source="prolific"),
            consent_given=True,
        )
        participant_answer_all(participant=participant, choose=choose)


@pytest.fixture(scope="module")
def answered_study(django_db_setup, django_db_blocker, tmp_path_factory, seed_study_dir):
    """The seed study (LoRA vs TI, 5 landmarks, 3 reference questions) answered by 12 participants, 2 careless.

    Built once per module (answering through the services takes seconds) and deleted afterwards; tests only read it.
    """
    from django.test import override_settings

    from studies.services import stimuli_import, study_create_from_generation

    with override_settings(MEDIA_ROOT=tmp_path_factory.mktemp("media")), django_db_blocker.unblock():
        run = stimuli_import(manifest=seed_study_dir / "manifest.json")
        study = study_create_from_generation(run=run, slug="seed", title="Seed study", attention_checks=2)
        answer_study(study, participants=12, careless=2)
        assert Participant.objects.filter(study=study, finished_at__isnull=False).count() == 12
        yield study
        prompt_set = run.prompt_set
        study.delete()
        run.delete()
        prompt_set.delete()


@pytest.fixture
def seed_run(db, settings, tmp_path, seed_study_dir):
    """The seed study's stimuli imported as a generation run (10 images, 2 arms, 5 prompts) in a fresh media root."""
    from studies.services import stimuli_import

    settings.MEDIA_ROOT = tmp_path / "media"
    return stimuli_import(manifest=seed_study_dir / "manifest.json")


@pytest.fixture(scope="session")
def tiny_clip_dir(tmp_path_factory):
    """A tiny random CLIP (text + vision, 32px, 16-dim projection) with tokenizer and image processor, offline."""
    import json

    import torch
    from transformers import CLIPConfig, CLIPImageProcessorPil, CLIPModel, CLIPTokenizer

    from trainer.engine.tiny_model import BOS_TOKEN, EOS_TOKEN, build_bpe_files

    path = tmp_path_factory.mktemp("clip") / "tiny-clip"
    path.mkdir()
    vocab, merges = build_bpe_files()
    (path / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    (path / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")
    tokenizer = CLIPTokenizer.from_pretrained(path, model_max_length=77)
    layers = {"hidden_size": 32, "intermediate_size": 37, "num_hidden_layers": 2, "num_attention_heads": 4}
    config = CLIPConfig(
        text_config={
            **layers,
            "vocab_size": len(vocab),
            "max_position_embeddings": 77,
            "bos_token_id": vocab[BOS_TOKEN],
            "eos_token_id": vocab[EOS_TOKEN],
            "pad_token_id": vocab[EOS_TOKEN],
        },
        vision_config={**layers, "image_size": 32, "patch_size": 8},
        projection_dim=16,
    )
    torch.manual_seed(0)
    CLIPModel(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    CLIPImageProcessorPil(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(
        path
    )
    return path
