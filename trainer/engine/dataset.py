"""Turn a folder of captioned images into a training-ready dataset (pure Python, no Django).

Input: `name.<jpg|jpeg|png|webp>` beside `name.txt`. Output: `images/<name>.png` squares, `train.txt` and
`validation.txt` (`filename|caption` per line) and `manifest.json` with settings, hashes and skips.
"""

from __future__ import annotations

import hashlib
import json
import random
import shutil
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from peftlab.errors import UserInputError
from peftlab.files import swap_folder
from peftlab.progress import Progress, ProgressCallback, ignore_progress

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp")
CAPTION_SUFFIX = ".txt"
MANIFEST_VERSION = 1


@dataclass(frozen=True)
class PrepareConfig:
    """How to prepare a dataset."""

    resolution: int = 512  # side of the square images written
    val_fraction: float = 0.1  # share of pairs held out for the validation loss
    seed: int = 42  # seed of the shuffle that splits train and validation
    min_size: int = 256  # images whose short side is smaller are skipped

    def __post_init__(self) -> None:
        if self.resolution < 8:
            raise UserInputError(f"--resolution must be at least 8 pixels, got {self.resolution}.")
        if not 0 <= self.val_fraction < 1:
            raise UserInputError(f"--val-fraction must be in [0, 1), got {self.val_fraction}.")
        if self.min_size < 0:
            raise UserInputError(f"--min-size must be 0 or more, got {self.min_size}.")


@dataclass(frozen=True)
class Skipped:
    """A source file that did not become a training pair, and why."""

    file: str
    reason: str


@dataclass(frozen=True)
class Pair:
    """One prepared image with its caption and the hashes of its sources."""

    image: str  # file name under images/
    caption: str
    source_image: str
    source_caption: str
    source_image_sha256: str
    source_caption_sha256: str
    source_size: tuple[int, int]
    # Where the square was cut from the resized source (top, left) in pixels at the prepared resolution;
    # SDXL's UNet is told it (size-and-crop conditioning).
    crop_top_left: tuple[int, int] = (0, 0)


@dataclass
class PreparedDataset:
    """What `prepare_dataset` wrote."""

    path: Path
    pairs: list[Pair]
    train: list[str]
    validation: list[str]
    skipped: list[Skipped]
    manifest_sha256: str
    config: PrepareConfig = field(default_factory=PrepareConfig)

    @property
    def reasons(self) -> dict[str, int]:
        """How many files were skipped for each reason."""
        counts: dict[str, int] = {}
        for skip in self.skipped:
            counts[skip.reason] = counts.get(skip.reason, 0) + 1
        return counts


def read_caption(path: Path) -> str:
    """A caption without BOM or surrounding whitespace, its line breaks turned into spaces."""
    text = path.read_bytes().decode("utf-8-sig", errors="replace")
    return " ".join(line.strip() for line in text.splitlines() if line.strip())


def image_stem(name: str) -> str | None:
    """The stem of an image file name without every trailing image suffix (`x.png.png` -> `x`)."""
    stem = name
    while Path(stem).suffix.lower() in IMAGE_SUFFIXES:
        stem = stem[: -len(Path(stem).suffix)]
    return stem if stem != name and stem else None


SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I")  # how Pillow opens 16-bit grayscale PNGs and TIFFs


def to_eight_bit(image: Image.Image) -> Image.Image:
    """A 16-bit grayscale image scaled to 8-bit `L` (Pillow's `convert` clips at 255: all white)."""
    values = np.asarray(image, dtype=np.float64)
    return Image.fromarray(np.clip(np.rint(values / 257.0), 0, 255).astype(np.uint8))


def load_square_rgb(
    path: Path, resolution: int, min_size: int
) -> tuple[Image.Image, tuple[int, int], tuple[int, int]]:
    """Open, orient, flatten to RGB, resize the short side to `resolution` and centre-crop to a square; also
    the source's (width, height) and the crop's (top, left)."""
    with Image.open(path) as opened:
        opened.load()  # raises on truncated or corrupt data
        image = ImageOps.exif_transpose(opened)
    size = image.size
    if min(size) < min_size:
        raise ValueError(f"smaller than --min-size {min_size} ({size[0]}x{size[1]})")
    if image.mode in SIXTEEN_BIT_MODES:
        image = to_eight_bit(image)
    if image.mode != "RGB":
        # Palette, grayscale, CMYK, with or without transparency: go through RGBA, flatten onto white.
        rgba = image.convert("RGBA")
        image = Image.new("RGB", rgba.size, (255, 255, 255))
        image.paste(rgba, mask=rgba.getchannel("A"))
    width, height = image.size
    scale = resolution / min(width, height)
    resized = (max(resolution, round(width * scale)), max(resolution, round(height * scale)))
    image = image.resize(resized, Image.Resampling.LANCZOS)
    left = (resized[0] - resolution) // 2
    top = (resized[1] - resolution) // 2
    return image.crop((left, top, left + resolution, top + resolution)), size, (top, left)


def sha256_file(path: Path) -> str:
    """The SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def find_candidates(source: Path) -> tuple[dict[str, Path], dict[str, Path], list[Skipped]]:
    """Images and captions by stem, plus the files that are neither."""
    images: dict[str, Path] = {}
    captions: dict[str, Path] = {}
    skipped: list[Skipped] = []
    for path in sorted(source.iterdir()):
        if path.name.startswith(".") or not path.is_file():
            continue
        if path.suffix.lower() == CAPTION_SUFFIX:
            captions[path.stem] = path
        elif (stem := image_stem(path.name)) is not None:
            if stem in images:
                skipped.append(
                    Skipped(path.name, f"another image has the same name stem ({images[stem].name})")
                )
            else:
                images[stem] = path
        else:
            skipped.append(Skipped(path.name, "not an image or caption file"))
    return images, captions, skipped


def caption_for(image: Path, stem: str, captions: dict[str, Path]) -> Path | None:
    """`x.png.txt` for `x.png.png` if it exists, else `x.txt`."""
    full_stem = image.name[: -len(image.suffix)]
    return captions.get(full_stem) or captions.get(stem)


def prepare_dataset(
    source: Path, output: Path, config: PrepareConfig, progress: ProgressCallback = ignore_progress
) -> PreparedDataset:
    """Prepare `source` into `output`; on any error nothing in `output` changes."""
    source, output = Path(source), Path(output)
    if not source.is_dir():
        raise UserInputError(
            f"source folder {source} does not exist; give a folder of images with .txt captions."
        )
    if output.exists() and not output.is_dir():
        raise UserInputError(f"output {output} is a file; give a folder path.")
    if output.resolve() == source.resolve():
        raise UserInputError("the output folder must differ from the source folder.")

    images, captions, skipped = find_candidates(source)
    used_captions: set[str] = set()
    output.parent.mkdir(parents=True, exist_ok=True)
    # Write into a sibling folder and swap it in at the end: reruns are safe, failures leave OUT as it was.
    staging = Path(tempfile.mkdtemp(prefix=f".{output.name}-", dir=output.parent))
    try:
        (staging / "images").mkdir()
        pairs: list[Pair] = []
        for done, (stem, image_path) in enumerate(sorted(images.items()), start=1):
            progress(Progress("prepare", done, len(images), message=image_path.name))
            caption_path = caption_for(image_path, stem, captions)
            if caption_path is None:
                skipped.append(Skipped(image_path.name, "image without caption"))
                continue
            used_captions.add(caption_path.stem)
            caption = read_caption(caption_path)
            if not caption:
                skipped.append(Skipped(caption_path.name, "empty caption"))
                continue
            if "|" in stem or "\n" in stem:
                skipped.append(Skipped(image_path.name, "file name contains '|' or a line break"))
                continue
            try:
                square, source_size, crop_top_left = load_square_rgb(
                    image_path, config.resolution, config.min_size
                )
            except ValueError as error:
                skipped.append(Skipped(image_path.name, f"image {error}"))
                continue
            except (OSError, UnidentifiedImageError, Image.DecompressionBombError, SyntaxError) as error:
                skipped.append(
                    Skipped(image_path.name, f"unreadable or truncated image ({type(error).__name__})")
                )
                continue
            name = f"{stem}.png"
            square.save(staging / "images" / name, format="PNG")
            pairs.append(
                Pair(
                    image=name,
                    caption=caption,
                    source_image=image_path.name,
                    source_caption=caption_path.name,
                    source_image_sha256=sha256_file(image_path),
                    source_caption_sha256=sha256_file(caption_path),
                    source_size=source_size,
                    crop_top_left=crop_top_left,
                )
            )
        skipped += [
            Skipped(path.name, "caption without image")
            for stem, path in captions.items()
            if stem not in used_captions
        ]
        skipped.sort(key=lambda skip: skip.file)
        if not pairs:
            raise UserInputError(
                f"no usable image/caption pairs in {source}; each image needs a .txt caption of the same name."
            )
        train, validation = split_pairs([pair.image for pair in pairs], config)
        captions_by_image = {pair.image: pair.caption for pair in pairs}
        for name, subset in (("train.txt", train), ("validation.txt", validation)):
            lines = [f"{image}|{captions_by_image[image]}\n" for image in subset]
            (staging / name).write_text("".join(lines), encoding="utf-8")
        manifest = {
            "version": MANIFEST_VERSION,
            "source": str(source.resolve()),
            "settings": asdict(config),
            "counts": {
                "pairs": len(pairs),
                "train": len(train),
                "validation": len(validation),
                "skipped": len(skipped),
            },
            "pairs": [asdict(pair) for pair in pairs],
            "train": train,
            "validation": validation,
            "skipped": [asdict(skip) for skip in skipped],
        }
        manifest_text = json.dumps(manifest, indent=2, ensure_ascii=False, sort_keys=True)
        (staging / "manifest.json").write_text(manifest_text + "\n", encoding="utf-8")
        swap_folder(staging, output)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return PreparedDataset(
        path=output,
        pairs=pairs,
        train=train,
        validation=validation,
        skipped=skipped,
        manifest_sha256=hashlib.sha256(manifest_text.encode()).hexdigest(),
        config=config,
    )


def split_pairs(names: list[str], config: PrepareConfig) -> tuple[list[str], list[str]]:
    """Seeded shuffle, then the first `val_fraction` (at least one when there are two pairs or more) validates."""
    shuffled = sorted(names)
    random.Random(config.seed).shuffle(shuffled)
    n_val = round(len(shuffled) * config.val_fraction)
    if config.val_fraction > 0 and n_val == 0 and len(shuffled) >= 2:
        n_val = 1
    return sorted(shuffled[n_val:]), sorted(shuffled[:n_val])


def read_split(dataset: Path, name: str) -> list[tuple[str, str]]:
    """The `(filename, caption)` lines of `train.txt` or `validation.txt` in a prepared dataset."""
    path = Path(dataset) / name
    if not path.is_file():
        raise UserInputError(
            f"{path} is missing; prepare the dataset first with `manage.py prepare_dataset`."
        )
    rows = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        if "|" not in line:
            raise UserInputError(f"{path}:{number} is not `filename|caption`.")
        image, caption = line.split("|", 1)
        rows.append((image, caption))
    return rows
