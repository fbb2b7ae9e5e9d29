"""`manage.py generate` end to end: stored rows and PNGs, refused adapters leave nothing, the gallery and zip."""

import csv
import hashlib
import io
import struct
import zipfile
from pathlib import Path

import pytest
from django.contrib.auth import get_user_model
from django.core.management import CommandError, call_command
from django.urls import reverse

from generation.engine import AdapterArm, GenerationConfig
from generation.models import GeneratedImage, GenerationRun, PromptSet
from generation.services import generation_run_render, prompt_set_load

pytestmark = [pytest.mark.django_db, pytest.mark.slow]
TINY = ["--steps", "2", "--size", "64", "--batch-size", "4"]


def png_chunk_types(data: bytes) -> list[str]:
    """The chunk types of a PNG file, in order."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    types, offset = [], 8
    while offset < len(data):
        length, kind = struct.unpack(">I4s", data[offset : offset + 8])
        types.append(kind.decode("ascii"))
        offset += 12 + length
    return types


@pytest.fixture
def small_set(tmp_path: Path) -> PromptSet:
    path = tmp_path / "two.csv"
    path.write_text("landmark,text\nBig Ben,big ben clock tower\nPetra,petra stone temple\n")
    return prompt_set_load(path=path)


def test_generate_renders_every_arm_and_stores_blind_pngs(tiny_model_dir, adapters, capsys):
    call_command(
        "generate",
        "--model", str(tiny_model_dir),
        "--lora", str(adapters["peft"]),
        "--ti", str(adapters["ti"]),
        "--token", "<peftlab-ti>",
        "--seeds", "0,1",
        *TINY,
    )  # fmt: skip
    run = GenerationRun.objects.get()
    assert run.status == GenerationRun.Status.FINISHED and run.prompt_set.name == "landmarks"
    assert run.arms == ["base", "lora", "ti"]
    assert set(run.effects) == {"lora", "ti"} and min(run.effects.values()) > 0.5
    assert {"torch", "diffusers", "peft", "device"} <= set(run.versions)
    assert run.images.count() == 10 * 2 * 3
    out = capsys.readouterr().out
    assert f"Run {run.pk} finished: 60 images (base 20, lora 20, ti 20)" in out
    assert "Effect check lora: probe differs by" in out

    ti_image = run.images.filter(arm="ti").first()
    assert ti_image.rendered_prompt.startswith("An image of <peftlab-ti>, ")
    assert ti_image.parameters["token"] == "<peftlab-ti>" and ti_image.parameters["steps"] == 2
    names = set()
    for image in run.images.all():
        data = Path(image.image.path).read_bytes()
        assert hashlib.sha256(data).hexdigest() == image.sha256
        assert set(png_chunk_types(data)) == {"IHDR", "IDAT", "IEND"}
        assert (image.width, image.height) == (64, 64)
        name = Path(image.image.name).name
        # 32 random hex digits: nothing of the arm, prompt, seed or method.
        assert len(name) == len("0" * 32 + ".png") and int(name[:32], 16) >= 0
        assert image.arm not in name and b"peftlab-ti" not in data and b"lora" not in data.lower()
        names.add(name)
    assert len(names) == 60

    # Each arm of a prompt/seed started from the same noise, and the adapters changed the pixels.
    big_ben = run.prompt_set.prompts.get(landmark="Big Ben", position=0)
    pixels = {
        image.arm: Path(image.image.path).read_bytes() for image in run.images.filter(prompt=big_ben, seed=0)
    }
    assert len(set(pixels.values())) == 3


def test_same_seed_gives_identical_base_images_across_runs(tiny_model_dir, small_set):
    config = GenerationConfig(model=str(tiny_model_dir), seeds=(3,), steps=2, width=64, height=64)
    first = generation_run_render(prompt_set=small_set, config=config)
    second = generation_run_render(prompt_set=small_set, config=config)
    digests = [
        list(run.images.order_by("prompt__position").values_list("sha256", flat=True))
        for run in (first, second)
    ]
    assert digests[0] == digests[1] and len(set(digests[0])) == 2


def test_zero_effect_lora_is_refused_and_nothing_is_stored(tiny_model_dir, adapters, small_set, media_root):
    with pytest.raises(CommandError) as raised:
        call_command(
            "generate",
            "--model",
            str(tiny_model_dir),
            "--lora",
            str(adapters["zero"]),
            "--prompts",
            "two",
            *TINY,
        )
    assert "had no visible effect" in str(raised.value) and "\n" not in str(raised.value)
    run = GenerationRun.objects.get()
    assert run.status == GenerationRun.Status.FAILED and "no visible effect" in run.error
    assert not GeneratedImage.objects.exists()
    assert not list(media_root.rglob("*.png"))


def test_wrong_width_embedding_is_one_line_with_both_widths(tiny_model_dir, adapters, small_set):
    with pytest.raises(CommandError) as raised:
        call_command(
            "generate",
            "--model", str(tiny_model_dir),
            "--ti", str(adapters["ti_wide"]),
            "--token", "<wide>",
            "--prompts", "two",
            *TINY,
        )  # fmt: skip
    assert str(raised.value) == "embedding wide.safetensors: expected width 32, file has 768."
    assert not GeneratedImage.objects.exists()


def test_unknown_prompt_set_and_missing_adapter_fail_before_rendering(tiny_model_dir, tmp_path):
    with pytest.raises(CommandError, match="no prompt set 'nope'"):
        call_command("generate", "--model", str(tiny_model_dir), "--prompts", "nope", *TINY)
    with pytest.raises(CommandError, match="adapter .*missing does not exist"):
        call_command("generate", "--model", str(tiny_model_dir), "--lora", str(tmp_path / "missing"), *TINY)
    assert not GenerationRun.objects.exists()


def test_gallery_is_staff_only_and_the_zip_has_a_manifest(client, tiny_model_dir, adapters, small_set):
    config = GenerationConfig(
        model=str(tiny_model_dir),
        arms=("base", "lora"),
        adapters=(AdapterArm.detect("lora", str(adapters["diffusers"])),),
        seeds=(0, 1),
        steps=2,
        width=64,
        height=64,
    )
    run = generation_run_render(prompt_set=small_set, config=config)
    urls = [
        reverse("generation:run_list"),
        reverse("generation:run_gallery", args=[run.pk]),
        reverse("generation:run_download", args=[run.pk]),
    ]
    for url in urls:
        response = client.get(url)
        assert response.status_code == 302 and response.url.startswith(reverse("admin:login"))
    user_model = get_user_model()
    client.force_login(user_model.objects.create_user("visitor", password="x"))
    assert client.get(urls[1]).status_code == 302

    client.force_login(user_model.objects.create_user("staff", password="x", is_staff=True))
    page = client.get(urls[1]).content.decode()
    assert page.count("<img ") == 2 * 2 * 2
    assert 'title="arm: lora\nseed: 0\nprompt: big ben clock tower' in page
    assert "scheduler: dpmsolver++" in page

    response = client.get(urls[2])
    assert response.status_code == 200
    archive = zipfile.ZipFile(io.BytesIO(b"".join(response.streaming_content)))
    rows = list(csv.DictReader(io.StringIO(archive.read("manifest.csv").decode())))
    assert len(rows) == 8 and {row["arm"] for row in rows} == {"base", "lora"}
    for row in rows:
        assert hashlib.sha256(archive.read(row["file"])).hexdigest() == row["sha256"]
    assert {row["adapter"] for row in rows if row["arm"] == "lora"} == {str(adapters["diffusers"])}


def test_progress_reports_the_whole_runs_share_of_images(tiny_model_dir, adapters, small_set):
    config = GenerationConfig(
        model=str(tiny_model_dir),
        arms=("base", "lora"),
        adapters=(AdapterArm.detect("lora", str(adapters["peft"])),),
        seeds=(0, 1),
        steps=2,
        width=64,
        height=64,
        batch_size=2,
    )
    reports = []
    generation_run_render(prompt_set=small_set, config=config, progress=reports.append)
    shares = [(report.stage, report.done, report.overall) for report in reports]
    # Loading and the effect check render no study image: 0 % of the run, whatever their own stage says.
    assert all(overall == 0.0 for stage, _, overall in shares if not stage.startswith("render"))
    assert [share for share in shares if share[0].startswith("render")] == [
        ("render base", 0, 0.0),
        ("render base", 2, 0.25),
        ("render base", 4, 0.5),
        ("render lora", 0, 0.5),
        ("render lora", 2, 0.75),
        ("render lora", 4, 1.0),
    ]


def test_generate_adapter_arms_of_several_methods_are_recorded_in_order(
    tiny_model_dir, method_adapters, adapters, small_set, capsys
):
    call_command(
        "generate",
        "--model", str(tiny_model_dir),
        "--adapter", f"dora={method_adapters['dora_diffusers']}",
        "--adapter", f"lokr={method_adapters['lokr']}",
        "--adapter", f"style={adapters['ti_a1111']}",
        "--adapter-token", "style=<style-token>",
        "--prompts", "two",
        "--seeds", "0",
        *TINY,
    )  # fmt: skip
    run = GenerationRun.objects.get()
    assert run.arms == ["base", "dora", "lokr", "style"]
    assert [(a["name"], a["method"], a["format"], a["token"]) for a in run.adapters] == [
        ("dora", "dora", "diffusers", None),
        ("lokr", "lokr", "peft", None),
        ("style", "ti", "embedding", "<style-token>"),
    ]
    assert run.adapters[1]["path"] == str(method_adapters["lokr"])
    assert set(run.effects) == {"dora", "lokr", "style"} and min(run.effects.values()) > 0.5
    assert "8 images (base 2, dora 2, lokr 2, style 2)" in capsys.readouterr().out
    style = run.images.filter(arm="style").first()
    assert style.rendered_prompt.startswith("An image of <style-token>, ")
    assert (style.parameters["method"], style.parameters["adapter"]) == ("ti", str(adapters["ti_a1111"]))
