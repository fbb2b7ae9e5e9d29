"""prepare_dataset on real images plus generated bad files: what a user relies on when preparing data."""

import hashlib
import json
import shutil
from io import StringIO
from pathlib import Path

import numpy as np
import pytest
from django.core.management import CommandError, call_command
from PIL import Image

from trainer.engine.dataset import PrepareConfig, prepare_dataset, read_split
from trainer.models import Dataset

REAL_STEMS = [
    "big-ben-sunset-sunrise_ghibli_01",
    "big-ben-sunset-sunrise_ghibli_02",
    "anzac-bridge_ghibli_01",
    "apsley-falls_ghibli_01",
    "balls-pyramid_ghibli_01",
    "chichen-itza-el-castillo_ghibli_01",
]


def write_caption(folder: Path, stem: str, text: str) -> None:
    (folder / f"{stem}.txt").write_text(text, encoding="utf-8")


@pytest.fixture
def source(tmp_path, ghibli_dir) -> Path:
    """Six real captioned images plus every kind of awkward file a user's folder holds."""
    folder = tmp_path / "src"
    folder.mkdir()
    for stem in REAL_STEMS:
        shutil.copy(ghibli_dir / f"{stem}.jpg", folder / f"{stem}.jpg")
        shutil.copy(ghibli_dir / f"{stem}.txt", folder / f"{stem}.txt")
    # RGBA with a transparent left half: must be flattened onto white.
    rgba = Image.new("RGBA", (600, 600), (255, 0, 0, 255))
    rgba.paste((0, 0, 0, 0), (0, 0, 300, 600))
    rgba.save(folder / "transparent.PNG")
    write_caption(folder, "transparent", "ghiblivis red square\n")
    Image.new("L", (520, 520), 128).save(folder / "gray.webp")
    write_caption(folder, "gray", "\ufeff  ghiblivis grey\r\nsquare  ")
    Image.new("P", (512, 512), 3).save(folder / "palette.png")
    write_caption(folder, "palette", "ghiblivis palette")
    # EXIF orientation 6 (rotate 90° CW to display): a 600x400 landscape file displays as 400x600 portrait.
    rotated = Image.new("RGB", (600, 400), (0, 0, 255))
    rotated.paste((255, 255, 0), (0, 0, 300, 400))
    exif = Image.Exif()
    exif[0x0112] = 6
    rotated.save(folder / "rotated.jpeg", exif=exif)
    write_caption(folder, "rotated", "ghiblivis rotated")
    Image.new("RGB", (512, 512), (0, 128, 0)).save(folder / "double.png.png")
    write_caption(folder, "double", "ghiblivis double extension")
    (folder / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    write_caption(folder, "corrupt", "ghiblivis corrupt")
    truncated = (ghibli_dir / f"{REAL_STEMS[0]}.jpg").read_bytes()
    (folder / "truncated.jpg").write_bytes(truncated[: len(truncated) // 3])
    write_caption(folder, "truncated", "ghiblivis truncated")
    Image.new("RGB", (100, 100)).save(folder / "tiny.png")
    write_caption(folder, "tiny", "ghiblivis too small")
    Image.new("RGB", (512, 512)).save(folder / "empty.png")
    write_caption(folder, "empty", "  \n ")
    Image.new("RGB", (512, 512)).save(folder / "orphan-image.png")
    write_caption(folder, "orphan-caption", "no image for me")
    (folder / "notes.md").write_text("not data")
    return folder


def prepare(source: Path, output: Path, **overrides) -> None:
    call_command(
        "prepare_dataset", str(source), str(output), stdout=StringIO(), stderr=StringIO(), **overrides
    )


@pytest.mark.django_db
def test_pairs_skips_and_manifest_are_complete(source, tmp_path):
    out = tmp_path / "out"
    prepare(source, out)
    manifest = json.loads((out / "manifest.json").read_text())
    prepared = {pair["image"] for pair in manifest["pairs"]}
    expected = {f"{stem}.png" for stem in REAL_STEMS} | {
        "transparent.png",
        "gray.png",
        "palette.png",
        "rotated.png",
        "double.png",
    }
    assert prepared == expected
    skipped = {skip["file"]: skip["reason"] for skip in manifest["skipped"]}
    assert skipped["orphan-image.png"] == "image without caption"
    assert skipped["orphan-caption.txt"] == "caption without image"
    assert skipped["empty.txt"] == "empty caption"
    assert skipped["notes.md"] == "not an image or caption file"
    assert skipped["corrupt.jpg"].startswith("unreadable or truncated image")
    assert skipped["truncated.jpg"].startswith("unreadable or truncated image")
    assert "smaller than --min-size 256" in skipped["tiny.png"]
    assert len(skipped) == 7
    assert manifest["counts"] == {"pairs": 11, "train": 10, "validation": 1, "skipped": 7}
    assert manifest["settings"] == {"resolution": 512, "val_fraction": 0.1, "seed": 42, "min_size": 256}
    big_ben = next(pair for pair in manifest["pairs"] if pair["source_image"] == f"{REAL_STEMS[0]}.jpg")

    real = source / f"{REAL_STEMS[0]}.jpg"
    assert big_ben["source_image_sha256"] == hashlib.sha256(real.read_bytes()).hexdigest()
    caption = (source / f"{REAL_STEMS[0]}.txt").read_text().strip()
    assert big_ben["caption"] == caption
    row = Dataset.objects.get(path=str(out.resolve()))
    assert (row.num_pairs, row.num_train, row.num_validation, row.num_skipped) == (11, 10, 1, 7)


@pytest.mark.django_db
def test_images_are_square_rgb_and_centre_cropped(source, tmp_path):
    out = tmp_path / "out"
    prepare(source, out)
    for path in (out / "images").iterdir():
        with Image.open(path) as image:
            assert image.size == (512, 512) and image.mode == "RGB", path.name
    transparent = np.asarray(Image.open(out / "images" / "transparent.png"))
    assert transparent[256, 10].tolist() == [255, 255, 255]  # transparency flattened onto white
    assert transparent[256, 500].tolist() == [255, 0, 0]
    # Rotated upright the yellow half is on top; the centre crop of the 400x600 portrait keeps rows 100..500.
    rotated = np.asarray(Image.open(out / "images" / "rotated.png")).astype(int)
    assert rotated[20, 256, 2] < 80 and rotated[20, 256, 0] > 200  # top is yellow
    assert rotated[490, 256, 2] > 200 and rotated[490, 256, 0] < 80  # bottom is blue
    # The centred crop of a non-square image: a marked centre column stays in the middle.
    wide = Image.new("RGB", (1024, 512), (0, 0, 0))
    wide.paste((255, 255, 255), (508, 0, 516, 512))
    folder = tmp_path / "wide"
    folder.mkdir()
    wide.save(folder / "wide.png")
    write_caption(folder, "wide", "wide")
    prepare_dataset(folder, tmp_path / "wide-out", PrepareConfig(resolution=256, val_fraction=0))
    cropped = np.asarray(Image.open(tmp_path / "wide-out" / "images" / "wide.png"))
    white_columns = np.where(cropped[128, :, 0] > 128)[0]
    assert abs(white_columns.mean() - 127.5) <= 1


@pytest.mark.django_db
def test_captions_are_cleaned(source, tmp_path):
    out = tmp_path / "out"
    prepare(source, out, val_fraction=0)
    captions = dict(read_split(out, "train.txt"))
    assert captions["gray.png"] == "ghiblivis grey square"
    assert read_split(out, "validation.txt") == []


def test_split_is_reproducible_and_depends_on_seed(ghibli_dir, tmp_path):
    folder = tmp_path / "src"
    folder.mkdir()
    for path in sorted(ghibli_dir.glob("*.txt"))[:30]:
        (folder / path.name).write_text(path.read_text())
        Image.new("RGB", (64, 64)).save(folder / f"{path.stem}.png")
    config = PrepareConfig(resolution=32, min_size=32)
    first = prepare_dataset(folder, tmp_path / "a", config)
    second = prepare_dataset(folder, tmp_path / "b", config)
    other = prepare_dataset(folder, tmp_path / "c", PrepareConfig(resolution=32, min_size=32, seed=7))
    assert len(first.validation) == 3 and len(first.train) == 27
    assert first.validation == second.validation
    assert (tmp_path / "a" / "train.txt").read_text() == (tmp_path / "b" / "train.txt").read_text()
    assert first.manifest_sha256 == second.manifest_sha256
    assert other.validation != first.validation
    assert set(first.train) | set(first.validation) == set(other.train) | set(other.validation)


@pytest.mark.django_db
def test_rerun_into_same_output_is_safe(source, tmp_path):
    out = tmp_path / "out"
    prepare(source, out)
    (source / "palette.png").unlink()
    prepare(source, out)
    assert not (out / "images" / "palette.png").exists()  # stale files from the first run are gone
    assert Dataset.objects.filter(path=str(out.resolve())).count() == 1
    assert Dataset.objects.get().num_pairs == 10
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no staging left behind


@pytest.mark.django_db
@pytest.mark.parametrize(
    "case, message",
    [
        ("missing", "does not exist"),
        ("no-pairs", "no usable image/caption pairs"),
        ("output-is-file", "is a file"),
    ],
)
def test_bad_input_is_one_line_and_writes_nothing(tmp_path, case, message):
    src = tmp_path / "src"
    out = tmp_path / "out"
    if case != "missing":
        src.mkdir()
        Image.new("RGB", (300, 300)).save(src / "lonely.png")
    if case == "output-is-file":
        write_caption(src, "lonely", "a caption")
        out.write_text("precious")
    with pytest.raises(CommandError) as error:
        prepare(src, out)
    assert message in str(error.value) and "\n" not in str(error.value)
    if case == "output-is-file":
        assert out.read_text() == "precious"
    else:
        assert not out.exists()
    assert not Dataset.objects.exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_command_exits_non_zero_without_traceback(tmp_path):
    import subprocess
    import sys

    result = subprocess.run(
        [sys.executable, "manage.py", "prepare_dataset", str(tmp_path / "nope"), str(tmp_path / "out")],
        capture_output=True,
        text=True,
        cwd=Path(__file__).resolve().parents[2],
        env={"DJANGO_SETTINGS_MODULE": "tests.settings", "PATH": "/usr/bin:/bin"},
    )
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("CommandError: source folder")


def test_sixteen_bit_grayscale_keeps_its_tones(tmp_path):
    """A 16-bit PNG (mode I;16) is scaled to 8 bits, not clipped to white."""
    folder = tmp_path / "gray16"
    folder.mkdir()
    ramp = np.tile(np.linspace(0, 65535, 64).astype(np.uint16), (64, 1))  # black left, white right
    Image.fromarray(ramp).save(folder / "ramp.png")
    with Image.open(folder / "ramp.png") as opened:
        assert opened.mode.startswith("I")  # the case of the defect: Pillow opens it as 16-bit
    write_caption(folder, "ramp", "a grey ramp")
    prepare_dataset(folder, tmp_path / "out", PrepareConfig(resolution=64, min_size=64, val_fraction=0))
    pixels = np.asarray(Image.open(tmp_path / "out" / "images" / "ramp.png")).astype(int)
    assert pixels[32, 0].tolist() == [0, 0, 0] and pixels[32, -1].tolist() == [255, 255, 255]
    assert 100 < pixels[32, 32, 0] < 155  # mid-grey stays mid-grey
