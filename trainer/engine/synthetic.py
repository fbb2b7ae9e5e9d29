"""A small synthetic captioned dataset for the demo and for machines without the real images."""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageDraw

LANDMARKS = ("tower", "bridge", "castle", "temple", "pyramid", "clock")
SKIES = {"sunset": (250, 170, 110), "night": (40, 50, 110), "day": (140, 200, 245)}
COLOURS = {"red": (200, 60, 50), "white": (235, 235, 225), "green": (70, 150, 90), "blue": (60, 90, 190)}


@dataclass(frozen=True)
class SyntheticDatasetConfig:
    """How many images to draw, how large, and the seed of the drawing."""

    count: int = 16
    size: int = 96
    seed: int = 0


def draw_landmark(rng: random.Random, landmark: str, sky: str, colour: str, size: int) -> Image.Image:
    """A flat, painterly toy landmark: sky gradient, hills, and a coloured building silhouette."""
    image = Image.new("RGB", (size, size))
    draw = ImageDraw.Draw(image)
    top = SKIES[sky]
    for y in range(size):
        shade = y / size
        draw.line([(0, y), (size, y)], fill=tuple(int(c * (1 - 0.4 * shade) + 60 * shade) for c in top))
    horizon = int(size * rng.uniform(0.6, 0.75))
    draw.ellipse([-size // 2, horizon - size // 6, size // 2 + size // 3, horizon + size], fill=(80, 140, 80))
    draw.rectangle([0, horizon, size, size], fill=(90, 150, 85))
    width = int(size * rng.uniform(0.18, 0.3))
    left = int(size * rng.uniform(0.2, 0.55))
    height = int(size * rng.uniform(0.35, 0.55))
    fill = COLOURS[colour]
    if landmark == "pyramid":
        draw.polygon(
            [(left - width // 2, horizon), (left + width, horizon - height), (left + 2 * width, horizon)],
            fill=fill,
        )
    elif landmark == "bridge":
        draw.rectangle([0, horizon - height // 3, size, horizon - height // 3 + 4], fill=fill)
        for x in range(left % 20, size, 24):
            draw.rectangle([x, horizon - height // 3, x + 5, horizon], fill=fill)
    else:
        draw.rectangle([left, horizon - height, left + width, horizon], fill=fill)
        draw.polygon(
            [
                (left - 3, horizon - height),
                (left + width // 2, horizon - height - width),
                (left + width + 3, horizon - height),
            ],
            fill=(120, 60, 50),
        )
        if landmark == "clock":
            r = width // 3
            cx, cy = left + width // 2, horizon - height + width // 2
            draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=(250, 245, 220))
    return image


def make_synthetic_dataset(output: Path, config: SyntheticDatasetConfig) -> list[Path]:
    """Write `count` images with `.txt` captions (the reference study's format) to `output`."""
    rng = random.Random(config.seed)
    output.mkdir(parents=True, exist_ok=True)
    written = []
    for index in range(config.count):
        landmark = LANDMARKS[index % len(LANDMARKS)]
        sky = rng.choice(sorted(SKIES))
        colour = rng.choice(sorted(COLOURS))
        stem = f"{landmark}-{index:02d}_ghibli"
        draw_landmark(rng, landmark, sky, colour, config.size).save(output / f"{stem}.png")
        caption = f"ghiblivis painting of a {colour} {landmark} at {sky}, scenic calm village"
        (output / f"{stem}.txt").write_text(caption + "\n", encoding="utf-8")
        written.append(output / f"{stem}.png")
    return written
