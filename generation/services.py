"""Generation's writes: prompt sets and generation runs, each state change one keyword-only function."""

from __future__ import annotations

import csv
import hashlib
import json
import re
import tempfile
from collections.abc import Mapping
from pathlib import Path, PurePath
from typing import Any

from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.db import transaction
from django.utils import timezone
from django.utils.text import slugify

from generation.engine import (
    GenerationConfig,
    PromptItem,
    RenderedImage,
    check_arm_name,
    check_template,
    generate,
)
from generation.models import GeneratedImage, GenerationRun, Prompt, PromptSet
from generation.pngs import png_clean
from peftlab.errors import UserInputError
from peftlab.progress import ProgressCallback, ignore_progress

BUILTIN_PROMPTS = Path(__file__).resolve().parent / "builtin_prompts.json"
BUILTIN_SET_NAME = "landmarks"
RECORD_FIELDS = {"landmark", "text", "negative_prompt", "arm_templates", "reference_images"}
CSV_TEMPLATE_PREFIX = "template_"


def clean_record(record: Any, where: str) -> dict[str, Any]:
    """A prompt record's fields, checked; errors name `where` (a line or record) and the field at fault."""
    if not isinstance(record, dict):
        raise UserInputError(
            f"{where}: expected an object with 'landmark' and 'text', got {type(record).__name__}."
        )
    unknown = sorted(set(record) - RECORD_FIELDS)
    if unknown:
        raise UserInputError(
            f"{where}: field {unknown[0]!r} is unknown; fields are {', '.join(sorted(RECORD_FIELDS))}."
        )
    for name in ("landmark", "text"):
        value = record.get(name)
        if not isinstance(value, str) or not value.strip():
            raise UserInputError(f"{where}: field {name!r} is missing or empty.")
    if len(record["landmark"].strip()) > 200:
        raise UserInputError(f"{where}: field 'landmark' is longer than 200 characters.")
    negative = record.get("negative_prompt") or ""
    if not isinstance(negative, str):
        raise UserInputError(f"{where}: field 'negative_prompt' must be text.")
    templates = record.get("arm_templates") or {}
    if not isinstance(templates, dict):
        raise UserInputError(f"{where}: field 'arm_templates' must map arm names to templates.")
    for arm, template in templates.items():
        if not isinstance(template, str):
            raise UserInputError(
                f"{where}: field 'arm_templates' maps {arm!r} to {template!r}, not a template."
            )
        try:
            # Which arm is TI (its template must place {token}) is known when a run renders the set.
            check_arm_name(arm)
            check_template(template, arm)
        except UserInputError as error:
            raise UserInputError(f"{where}: field 'arm_templates': {error}") from None
    references = record.get("reference_images") or []
    if not isinstance(references, list) or not all(isinstance(item, str) for item in references):
        raise UserInputError(f"{where}: field 'reference_images' must be a list of paths.")
    return {
        "landmark": record["landmark"].strip(),
        "text": record["text"].strip(),
        "negative_prompt": negative.strip(),
        "arm_templates": templates,
        "reference_images": references,
    }


def json_record_lines(text: str, start: int) -> list[int]:
    """The line on which each element of the JSON array opening at `start` begins."""
    decoder = json.JSONDecoder()
    lines = []
    index = start + 1
    while True:
        index = re.compile(r"[\s,]*").match(text, index).end()
        if index >= len(text) or text[index] == "]":
            return lines
        lines.append(text.count("\n", 0, index) + 1)
        _, index = decoder.raw_decode(text, index)


def read_json_prompts(path: Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """(set fields, cleaned records) of a JSON prompt file: {"name", "description", "prompts": [...]} or [...]."""
    text = path.read_text(encoding="utf-8-sig")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as error:
        raise UserInputError(f"{path.name} line {error.lineno}: not valid JSON ({error.msg}).") from None
    if isinstance(data, list):
        records, header, start = data, {}, text.index("[")
    elif isinstance(data, dict) and isinstance(data.get("prompts"), list):
        records, header = data["prompts"], {key: data.get(key) for key in ("name", "description")}
        start = re.search(r'"prompts"\s*:\s*\[', text).end() - 1
    else:
        raise UserInputError(
            f"{path.name} line 1: expected a list of prompts or an object with a 'prompts' list."
        )
    lines = json_record_lines(text, start)
    cleaned = [
        clean_record(record, f"{path.name} line {line} (prompt {number})")
        for number, (record, line) in enumerate(zip(records, lines, strict=True), start=1)
    ]
    return header, cleaned


def read_csv_prompts(path: Path) -> list[dict[str, Any]]:
    """Cleaned records of a CSV prompt file: landmark, text[, negative_prompt, template_<arm>, reference_images]."""
    with path.open(newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        columns = reader.fieldnames or []
        for required in ("landmark", "text"):
            if required not in columns:
                raise UserInputError(f"{path.name} line 1: the header has no {required!r} column.")
        records = []
        for row in reader:
            where = f"{path.name} line {reader.line_num}"
            if None in row:
                raise UserInputError(f"{where}: more cells than the header has columns.")
            record: dict[str, Any] = {"arm_templates": {}}
            for column, value in row.items():
                value = value or ""
                if column.startswith(CSV_TEMPLATE_PREFIX):
                    if value.strip():
                        record["arm_templates"][column.removeprefix(CSV_TEMPLATE_PREFIX)] = value.strip()
                elif column == "reference_images":
                    record[column] = [item.strip() for item in value.split(";") if item.strip()]
                else:
                    record[column] = value
            records.append(clean_record(record, where))
    return records


def read_prompt_file(path: Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """(set fields, cleaned records) of a JSON or CSV prompt file."""
    if not path.is_file():
        raise UserInputError(f"prompt file {path} does not exist.")
    if path.suffix.lower() == ".json":
        header, records = read_json_prompts(path)
    elif path.suffix.lower() == ".csv":
        header, records = {}, read_csv_prompts(path)
    else:
        raise UserInputError(f"{path.name}: prompt files must end in .json or .csv.")
    if not records:
        raise UserInputError(f"{path.name} holds no prompts.")
    seen: set[tuple[str, str]] = set()
    for number, record in enumerate(records, start=1):
        key = (record["landmark"], record["text"])
        if key in seen:
            raise UserInputError(
                f"{path.name} prompt {number}: field 'text' repeats an earlier prompt of {key[0]!r}."
            )
        seen.add(key)
    return header, records


@transaction.atomic
def prompts_add(*, prompt_set: PromptSet, records: list[dict[str, Any]]) -> int:
    """Add the records that `prompt_set` lacks (matched on landmark and text); how many were added."""
    existing = set(prompt_set.prompts.values_list("landmark", "text"))
    position = prompt_set.prompts.count()
    added = 0
    for record in records:
        if (record["landmark"], record["text"]) in existing:
            continue
        prompt = Prompt(prompt_set=prompt_set, position=position, **record)
        prompt.full_clean()
        prompt.save()
        position += 1
        added += 1
    return added


def reference_image_read(*, reference: str, folder: Path, where: str) -> bytes:
    """A reference image named in a prompt file (relative to its `folder`) as a clean PNG, or a one-line error."""
    path = Path(reference).expanduser()
    path = path if path.is_absolute() else folder / path
    if not path.is_file():
        raise UserInputError(
            f"{where}: reference image {reference!r} does not exist ({path}); paths are relative to the "
            "prompt file's folder."
        )
    try:
        data = path.read_bytes()
    except OSError as error:
        raise UserInputError(f"{where}: reference image {path} cannot be read ({error.strerror}).") from None
    try:
        return png_clean(data)
    except UserInputError:
        raise UserInputError(f"{where}: reference image {path} is not a readable image; fix or remove it.") from None


def reference_image_store(*, png: bytes) -> str:
    """Store a clean reference PNG in media storage under its content hash; its storage name.

    The name says nothing of the landmark (participants receive references through opaque tokens anyway), and
    loading the same image twice stores it once.
    """
    name = f"references/{hashlib.sha256(png).hexdigest()}.png"
    if default_storage.exists(name):
        return name
    return default_storage.save(name, ContentFile(png))


def references_copy(*, records: list[dict[str, Any]], folder: Path, file_name: str) -> list[dict[str, Any]]:
    """The records with their reference images read from `folder` and copied into media storage.

    Every image is read and checked before any is stored, so a missing one leaves nothing behind.
    """
    prepared = [
        [
            reference_image_read(reference=reference, folder=folder, where=f"{file_name} prompt {number}")
            for reference in record["reference_images"]
        ]
        for number, record in enumerate(records, start=1)
    ]
    return [
        {**record, "reference_images": [reference_image_store(png=png) for png in pngs]}
        for record, pngs in zip(records, prepared, strict=True)
    ]


def prompt_set_new(*, name: str | None, header: dict[str, Any], path: Path) -> PromptSet:
    """An unsaved, validated prompt set named `name`, the file's "name", or the file's stem; taken names refused."""
    slug = slugify(name or header.get("name") or path.stem)
    if not slug:
        raise UserInputError(
            f"cannot make a set name from {name or path.stem!r}; pass --name with letters or digits."
        )
    if PromptSet.objects.filter(name=slug).exists():
        raise UserInputError(f"a prompt set named {slug!r} already exists; choose another --name.")
    prompt_set = PromptSet(name=slug, description=header.get("description") or f"Loaded from {path.name}.")
    prompt_set.full_clean()
    return prompt_set


@transaction.atomic
def prompt_set_load(*, path: Path, name: str | None = None) -> PromptSet:
    """Create a prompt set from a JSON or CSV file; malformed files are refused with the line and field.

    Reference images are read relative to the file's folder (absolute paths as they are) and copied into
    media storage as clean PNGs, so studies serve them wherever the file came from.
    """
    path = Path(path)
    header, records = read_prompt_file(path)
    prompt_set = prompt_set_new(name=name, header=header, path=path)
    records = references_copy(records=records, folder=path.resolve().parent, file_name=path.name)
    prompt_set.save()
    prompts_add(prompt_set=prompt_set, records=records)
    return prompt_set


@transaction.atomic
def prompt_set_upload(
    *, file_name: str, content: bytes, images: Mapping[str, bytes], name: str | None = None
) -> PromptSet:
    """Create a prompt set from an uploaded JSON or CSV file and its uploaded reference images.

    The file is checked by the same rules as `prompt_set_load`; each prompt's `reference_images` name uploaded
    files (by file name; folders in the names are ignored), never files on the server.
    """
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / (PurePath(file_name).name or "prompts")
        path.write_bytes(content)
        header, records = read_prompt_file(path)
    prompt_set = prompt_set_new(name=name, header=header, path=path)
    uploaded = {PurePath(file).name: data for file, data in images.items()}
    for number, record in enumerate(records, start=1):
        missing = [ref for ref in record["reference_images"] if PurePath(ref).name not in uploaded]
        if missing:
            raise UserInputError(
                f"{path.name} prompt {number} ({record['landmark']}): reference image {missing[0]!r} was not "
                "uploaded; add it to the reference images."
            )
    named = {PurePath(reference).name for record in records for reference in record["reference_images"]}
    unused = sorted(set(uploaded) - named)
    if unused:
        raise UserInputError(
            f"reference image {unused[0]!r} is named by no prompt's reference_images; remove it or name it."
        )
    # Every image is checked before any is stored, so a bad one leaves nothing behind.
    pngs = {}
    for file, data in uploaded.items():
        try:
            pngs[file] = png_clean(data)
        except UserInputError:
            raise UserInputError(
                f"reference image {file} is not a readable image; fix or remove it."
            ) from None
    stored = {file: reference_image_store(png=png) for file, png in pngs.items()}
    records = [
        {**record, "reference_images": [stored[PurePath(ref).name] for ref in record["reference_images"]]}
        for record in records
    ]
    prompt_set.save()
    prompts_add(prompt_set=prompt_set, records=records)
    return prompt_set


@transaction.atomic
def prompt_set_install_builtin() -> PromptSet:
    """Install (or complete) the built-in landmark prompt set; running it again changes nothing."""
    header, records = read_prompt_file(BUILTIN_PROMPTS)
    prompt_set, _ = PromptSet.objects.get_or_create(
        name=BUILTIN_SET_NAME, defaults={"description": header["description"], "builtin": True}
    )
    prompts_add(prompt_set=prompt_set, records=records)
    return prompt_set


def generation_run_create(
    *, prompt_set: PromptSet, config: GenerationConfig, name: str = ""
) -> GenerationRun:
    """A queued run of `config` over `prompt_set` (config paths were checked when `config` was built)."""
    if not prompt_set.prompts.exists():
        raise UserInputError(f"prompt set {prompt_set.name!r} is empty; load prompts into it first.")
    run = GenerationRun(
        name=name,
        prompt_set=prompt_set,
        arms=list(config.arms),
        config=config.to_dict(),
        status=GenerationRun.Status.QUEUED,
    )
    run.full_clean()
    run.save()
    return run


def generated_image_store(*, run: GenerationRun, rendered: RenderedImage) -> GeneratedImage:
    """Store one rendered image as an opaque-named, metadata-free PNG with its row."""
    data = png_clean(rendered.image)
    image = GeneratedImage(
        run=run,
        arm=rendered.arm,
        prompt_id=rendered.prompt_key,
        seed=rendered.seed,
        rendered_prompt=rendered.rendered_prompt,
        sha256=hashlib.sha256(data).hexdigest(),
        parameters=rendered.parameters,
    )
    # upload_to (opaque_image_name) replaces this name with a random one.
    image.image.save("image.png", ContentFile(data), save=False)
    try:
        image.full_clean()
        image.save()
    except Exception:
        image.image.delete(save=False)
        raise
    return image


def generated_images_delete(*, run: GenerationRun) -> None:
    """Delete a run's images, files first."""
    for image in run.images.all():
        image.image.delete(save=False)
    run.images.all().delete()


def generation_run_execute(
    *, run: GenerationRun, progress: ProgressCallback = ignore_progress
) -> GenerationRun:
    """Render a queued run; on failure it is marked failed, keeps no image, and the error is re-raised."""
    if run.status != GenerationRun.Status.QUEUED:
        raise UserInputError(f"generation run {run.pk} is {run.status}; only queued runs can be executed.")
    run.status = GenerationRun.Status.RUNNING
    run.started_at = timezone.now()
    run.save(update_fields=["status", "started_at"])
    try:
        config = GenerationConfig.from_dict(run.config)
        prompts = [
            PromptItem(
                key=prompt.pk,
                text=prompt.text,
                negative_prompt=prompt.negative_prompt,
                templates=prompt.arm_templates,
            )
            for prompt in run.prompt_set.prompts.all()
        ]
        result = generate(
            config, prompts, lambda rendered: generated_image_store(run=run, rendered=rendered), progress
        )
    except Exception as error:
        generated_images_delete(run=run)
        run.status = GenerationRun.Status.FAILED
        run.error = str(error) if isinstance(error, UserInputError) else f"{type(error).__name__}: {error}"
        run.finished_at = timezone.now()
        run.save(update_fields=["status", "error", "finished_at"])
        raise
    run.status = GenerationRun.Status.FINISHED
    run.timings = result.timings
    run.effects = result.effects
    run.versions = result.versions | {"device": result.device, "dtype": result.dtype}
    run.finished_at = timezone.now()
    run.save(update_fields=["status", "timings", "effects", "versions", "finished_at"])
    return run


def generation_run_render(
    *,
    prompt_set: PromptSet,
    config: GenerationConfig,
    name: str = "",
    progress: ProgressCallback = ignore_progress,
) -> GenerationRun:
    """Create a run and render it in this process (the `generate` command and the demo use this)."""
    run = generation_run_create(prompt_set=prompt_set, config=config, name=name)
    return generation_run_execute(run=run, progress=progress)
