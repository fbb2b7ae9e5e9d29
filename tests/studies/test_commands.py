"""import_stimuli on the reference study's real images, and create_study from a generation run."""

import hashlib
import json
import re
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command

from generation.models import GenerationRun
from studies.models import Study

from .conftest import Bot, choose_attentively
from .test_blinding import assert_blind, forbidden_words, png_chunk_types

pytestmark = pytest.mark.django_db


@pytest.fixture
def seed_run(seed_study_dir, capsys) -> GenerationRun:
    call_command("import_stimuli", str(seed_study_dir / "manifest.json"))
    out = capsys.readouterr().out
    assert "10 images, arms lora, ti, 5 prompts" in out
    return GenerationRun.objects.get()


def test_import_stimuli_copies_clean_opaque_images_with_references(seed_run, seed_study_dir):
    manifest = json.loads((seed_study_dir / "manifest.json").read_text())
    assert (
        seed_run.source == GenerationRun.Source.IMPORTED and seed_run.status == GenerationRun.Status.FINISHED
    )
    assert seed_run.arms == ["lora", "ti"]
    prompts = list(seed_run.prompt_set.prompts.all())
    assert [p.landmark for p in prompts] == [entry["name"] for entry in manifest["landmarks"]]
    for prompt, entry in zip(prompts, manifest["landmarks"], strict=True):
        assert prompt.text == entry["prompt"] and len(prompt.reference_images) == len(entry["references"])
    for image in seed_run.images.all():
        data = image.image.read()
        assert hashlib.sha256(data).hexdigest() == image.sha256
        assert set(png_chunk_types(data)) <= {b"IHDR", b"PLTE", b"IDAT", b"IEND"}
        assert image.prompt.landmark not in image.image.name and image.arm not in Path(image.image.name).name
        assert (image.width, image.height) == (512, 512)


def test_import_stimuli_rejects_a_missing_manifest_in_one_line(tmp_path):
    with pytest.raises(CommandError, match="does not exist"):
        call_command("import_stimuli", str(tmp_path / "manifest.json"))
    assert not GenerationRun.objects.exists()


def test_create_study_on_the_seed_study_and_walk_it_blind(seed_run, capsys):
    call_command(
        "create_study", "--from-generation", seed_run.pk, "--arms", "lora,ti", "--slug", "seed", "--open"
    )
    out = capsys.readouterr().out
    assert "5 trials x 3 questions + 2 attention checks" in out and "/studies/seed/" in out
    study = Study.objects.get(slug="seed")
    assert study.status == Study.Status.OPEN and study.questions.filter(show_references=True).count() == 2
    assert list(study.questions.get(key="identity").options) == ["both", "neither"]
    words = forbidden_words(study)
    words += [Path(entry).name for entry in seed_run.images.values_list("parameters__source_file", flat=True)]
    bot = Bot(study, "PROLIFIC_PID=real1")
    bot.consent()
    bot.finish(choose_attentively)
    for page in bot.pages:
        assert_blind(page, words)
    # Imported stimuli are stored clean, so they are sent byte for byte as stored.
    stored = {image.image.read() for image in seed_run.images.all()}
    sources = set(re.findall(r'<img src="([^"]+)" alt="Image on the', "".join(bot.pages)))
    assert len(sources) == seed_run.images.count()  # one URL per image for this participant
    assert all(bot.client.get(src).content in stored for src in sources)
    assert study.participants.get().responses.count() == 5 * 3 + 2


def test_create_study_refuses_arms_the_run_lacks(seed_run):
    with pytest.raises(CommandError, match=r"arm\(s\) \['base'\] have no images in run"):
        call_command("create_study", "--from-generation", seed_run.pk, "--arms", "base,lora,ti")
    assert not Study.objects.exists()


def test_create_study_with_questions_from_a_file(run, tmp_path, capsys):
    path = tmp_path / "questions.json"
    path.write_text(json.dumps([{"key": "nicer", "text": "Which is nicer?", "options": ["both"]}]))
    call_command(
        "create_study", "--from-generation", run.pk, "--questions", str(path), "--attention-checks", "0"
    )
    study = Study.objects.get()
    assert study.status == Study.Status.DRAFT and study.slug == "which-image-do-you-prefer"
    assert [q.key for q in study.questions.all()] == ["nicer"]
    assert study.trials.count() == 2 * 3  # two prompts x three pairs of arms
    path.write_text(json.dumps([{"key": "x", "text": "?", "options": ["maybe"]}]))
    with pytest.raises(CommandError, match="unknown options"):
        call_command("create_study", "--from-generation", run.pk, "--questions", str(path), "--slug", "other")
