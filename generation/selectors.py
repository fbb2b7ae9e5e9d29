"""Generation's reads: prompt sets, runs, the gallery grid and the run's zip export."""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import BinaryIO

from django.db.models import Count, QuerySet

from generation.models import GeneratedImage, GenerationRun, Prompt, PromptSet
from peftlab.errors import UserInputError
from peftlab.spreadsheets import dict_rows_to_csv

MANIFEST_COLUMNS = [
    "file",
    "arm",
    "landmark",
    "prompt_id",
    "prompt",
    "rendered_prompt",
    "negative_prompt",
    "seed",
    "steps",
    "guidance",
    "scheduler",
    "width",
    "height",
    "model",
    "adapter",
    "sha256",
]


def prompt_set_get(*, name: str) -> PromptSet:
    """The prompt set called `name`; a one-line error listing the sets when there is none."""
    try:
        return PromptSet.objects.get(name=name)
    except PromptSet.DoesNotExist:
        names = ", ".join(PromptSet.objects.values_list("name", flat=True)) or "none yet"
        raise UserInputError(f"no prompt set {name!r} (sets: {names}); load one with load_prompts.") from None


def generation_run_list() -> QuerySet[GenerationRun]:
    """All runs, newest first, with their prompt set and image counts."""
    return GenerationRun.objects.select_related("prompt_set").annotate(image_count=Count("images"))


def generation_run_image_counts(*, run: GenerationRun) -> tuple[int, int]:
    """(images stored, images the run will have): every prompt x seed for each arm."""
    expected = run.prompt_set.prompts.count() * len(run.config.get("seeds") or [0]) * len(run.arms)
    return run.images.count(), expected


def generation_run_readiness(*, run: GenerationRun) -> str:
    """Why a study cannot be built from `run` yet ("" when it is finished), e.g. "still rendering (3 of 12 images)"."""
    if run.status == GenerationRun.Status.FINISHED:
        return ""
    if run.status == GenerationRun.Status.FAILED:
        return "failed; render it again"
    done, expected = generation_run_image_counts(run=run)
    verb = "queued to render" if run.status == GenerationRun.Status.QUEUED else "still rendering"
    return f"{verb} ({done} of {expected} images)"


@dataclass(frozen=True)
class GalleryCell:
    """One image of the gallery and the parameters shown when hovering over it."""

    image: GeneratedImage
    title: str


@dataclass(frozen=True)
class GalleryRow:
    """One prompt of the gallery: for each arm, its cells in seed order (None where no image was stored)."""

    prompt: Prompt
    cells: list[list[GalleryCell | None]]


def image_title(image: GeneratedImage) -> str:
    """Every parameter of an image, one per line, for its hover text."""
    parameters = {"arm": image.arm, "seed": image.seed, "prompt": image.rendered_prompt} | image.parameters
    parameters |= {"size": f"{image.width}x{image.height}", "sha256": image.sha256[:16]}
    return "\n".join(f"{key}: {value}" for key, value in parameters.items() if value not in ("", None))


def generation_run_grid(*, run: GenerationRun) -> tuple[list[int], list[GalleryRow]]:
    """(seeds, rows): prompts as rows, the run's arms as columns, each cell the seeds' images."""
    seeds = list(run.config.get("seeds", []))
    cells = {
        (image.prompt_id, image.arm, image.seed): GalleryCell(image=image, title=image_title(image))
        for image in run.images.all()
    }
    rows = [
        GalleryRow(
            prompt=prompt,
            cells=[[cells.get((prompt.pk, arm, seed)) for seed in seeds] for arm in run.arms],
        )
        for prompt in run.prompt_set.prompts.all()
    ]
    return seeds, rows


def image_adapter(image: GeneratedImage) -> str:
    """The adapter file an image's arm used, or '' for the base arm."""
    return image.parameters.get("adapter", "")


def generation_run_zip(*, run: GenerationRun, stream: BinaryIO) -> None:
    """Write the run's images (under their opaque names) and a manifest.csv describing each to `stream`."""
    manifest = []
    with zipfile.ZipFile(stream, "w", compression=zipfile.ZIP_STORED) as archive:
        for image in run.images.select_related("prompt"):
            name = f"images/{PurePosixPath(image.image.name).name}"
            with image.image.open("rb") as handle:
                archive.writestr(name, handle.read())
            manifest.append(
                {
                    "file": name,
                    "arm": image.arm,
                    "landmark": image.prompt.landmark,
                    "prompt_id": image.prompt_id,
                    "prompt": image.prompt.text,
                    "rendered_prompt": image.rendered_prompt,
                    "negative_prompt": image.parameters.get("negative_prompt", ""),
                    "seed": image.seed,
                    "steps": image.parameters.get("steps"),
                    "guidance": image.parameters.get("guidance"),
                    "scheduler": image.parameters.get("scheduler"),
                    "width": image.width,
                    "height": image.height,
                    "model": image.parameters.get("model"),
                    "adapter": image_adapter(image),
                    "sha256": image.sha256,
                }
            )
        archive.writestr("manifest.csv", dict_rows_to_csv(manifest, MANIFEST_COLUMNS))
