"""Study setup: import stimuli rendered elsewhere, create studies (questions and trials), open and close them."""

import hashlib
import itertools
import json
import random
import secrets
from collections import defaultdict
from collections.abc import Iterable, Mapping
from pathlib import Path

from django.core.exceptions import ValidationError
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.core.validators import URLValidator
from django.db import transaction
from django.utils import timezone
from django.utils.text import slugify

from generation.engine import MAX_ADAPTERS
from generation.models import GeneratedImage, GenerationRun, Prompt, PromptSet
from generation.pngs import png_clean
from generation.selectors import generation_run_readiness
from peftlab.errors import UserInputError
from studies.models import Question, Study, Trial, study_contents_changed
from studies.selectors import COMPLETION_OUTCOMES
from studies.services.preregistration import study_plan_guard
from studies.services.stimuli import study_stimuli_check

MAX_STUDY_ARMS = MAX_ADAPTERS + 1
REFERENCE_QUESTIONS: list[dict] = [
    {
        "key": "artwork",
        "text": "Which of these two images would you rather buy as a piece of artwork?",
        "options": [],
        "show_references": False,
    },
    {
        "key": "style",
        "text": "Which image is stylistically closer to the reference images?",
        "options": [],
        "show_references": True,
    },
    {
        "key": "identity",
        # The landmark is never named (that would leak the prompt): the references show which one it is.
        "text": "Which image better preserves the identity of the landmark shown in the reference images?",
        "options": ["both", "neither"],
        "show_references": True,
    },
]

DEFAULT_CONSENT = (
    "You are invited to take part in a short study about images. You will see pairs of pictures and say "
    "which one you prefer. It takes about {duration}. We record your answers and how long you take; we do "
    "not ask for your name. You may stop at any time."
)
DEFAULT_INSTRUCTIONS = (
    "Each page shows two images side by side and asks one question. Choose the image on the left or the one "
    "on the right by clicking or tapping it (on a keyboard, the \u2190 or \u2192 key works too). Some "
    "questions also offer \u201cBoth equally\u201d or \u201cNeither\u201d. There are no right or wrong "
    "answers, except on a few pages that tell you exactly what to choose: they check that you are reading."
)


# ---------------------------------------------------------------- stimuli


def _first_free(base: str, taken) -> str:
    """`base`, or `base-2`, `base-3`, ... whichever `taken(name)` says is free."""
    name, number = base, 1
    while taken(name):
        number += 1
        name = f"{base}-{number}"
    return name


def _unique_prompt_set_name(base: str) -> str:
    return _first_free(base, lambda name: PromptSet.objects.filter(name=name).exists())


def _unique_slug(base: str) -> str:
    return _first_free(base, lambda slug: Study.objects.filter(slug=slug).exists())


def stimuli_import(*, manifest: Path, name: str | None = None) -> GenerationRun:
    """Import images rendered elsewhere (a seed-study style manifest.json) as a finished GenerationRun."""
    manifest = Path(manifest)
    try:
        data = json.loads(manifest.read_text())
        landmarks = data["landmarks"]
        arms = list(data["methods"])
    except FileNotFoundError:
        raise UserInputError(f"{manifest} does not exist; pass the path of a manifest.json.") from None
    except (json.JSONDecodeError, KeyError, TypeError) as error:
        raise UserInputError(
            f"{manifest} is not a stimuli manifest ({error!r}): it needs 'methods' and 'landmarks'."
        ) from None
    if not landmarks or not arms:
        raise UserInputError(f"{manifest} lists no landmarks or no methods; nothing to import.")
    root = manifest.parent
    # Read and clean every file before writing anything, so a bad file leaves nothing half-imported.
    prepared = []
    for entry in landmarks:
        missing = [arm for arm in arms if arm not in entry.get("images", {})]
        if missing or not entry.get("name") or not entry.get("prompt"):
            raise UserInputError(
                f"{manifest}: landmark {entry.get('name')!r} needs a name, a prompt and images for {arms}."
            )
        images = {arm: (entry["images"][arm], png_clean(root / entry["images"][arm])) for arm in arms}
        references = [png_clean(root / reference) for reference in entry.get("references", [])]
        prepared.append((entry, images, references))

    set_name = _unique_prompt_set_name(slugify(name or root.name) or "imported")
    with transaction.atomic():
        prompt_set = PromptSet.objects.create(
            name=set_name, description=data.get("description", f"Imported from {manifest}")
        )
        run = GenerationRun(
            name=name or f"imported {root.name}",
            status=GenerationRun.Status.FINISHED,
            source=GenerationRun.Source.IMPORTED,
            prompt_set=prompt_set,
            arms=arms,
            config={
                "manifest": str(manifest),
                "base_model": data.get("base_model", ""),
                "methods": data["methods"],
            },
            started_at=timezone.now(),
            finished_at=timezone.now(),
        )
        run.full_clean()
        run.save()
        for position, (entry, images, references) in enumerate(prepared):
            reference_names = [
                default_storage.save(f"references/{secrets.token_hex(16)}.png", ContentFile(png))
                for png in references
            ]
            prompt = Prompt(
                prompt_set=prompt_set,
                position=position,
                landmark=entry["name"],
                text=entry["prompt"],
                reference_images=reference_names,
            )
            prompt.full_clean()
            prompt.save()
            for arm, (source_file, png) in images.items():
                image = GeneratedImage(
                    run=run,
                    arm=arm,
                    prompt=prompt,
                    seed=0,
                    rendered_prompt=entry["prompt"],
                    sha256=hashlib.sha256(png).hexdigest(),
                    parameters={"source_file": source_file},
                )
                image.image.save("stimulus.png", ContentFile(png), save=False)
                # Django 5.2 leaves width/height None after FieldFile.save(save=False): fill them in.
                image.width, image.height = image.image.width, image.image.height
                image.full_clean()
                image.save()
    return run


# ---------------------------------------------------------------- creating studies


def questions_load(*, spec: str) -> list[dict]:
    """The questions named by `spec`: "reference" (the reference study's three) or a JSON file's list."""
    if spec == "reference":
        return [dict(question) for question in REFERENCE_QUESTIONS]
    path = Path(spec)
    try:
        questions = json.loads(path.read_text())
    except FileNotFoundError:
        raise UserInputError(
            f"{spec} is neither 'reference' nor an existing JSON file of questions."
        ) from None
    except json.JSONDecodeError as error:
        raise UserInputError(f"{spec} is not valid JSON ({error}).") from None
    if not isinstance(questions, list) or not questions or not all(isinstance(q, dict) for q in questions):
        raise UserInputError(
            f'{spec} must hold a list of questions like {{"key": "style", "text": "...", "options": ["both"]}}.'
        )
    return questions


def _question_add(*, study: Study, position: int, spec: Mapping) -> Question:
    """Validate one question spec (Question.clean checks the options) and save it."""
    question = Question(
        study=study,
        position=position,
        key=spec.get("key", ""),
        text=spec.get("text", ""),
        options=list(spec.get("options", [])),
        show_references=bool(spec.get("show_references", False)),
        label=spec.get("label", ""),
    )
    try:
        question.full_clean()
    except ValidationError as error:
        raise UserInputError(
            f"question {position + 1} ({dict(spec)}) is invalid: {error.messages[0]}"
        ) from None
    question.save()
    return question


def generation_run_ready_check(*, run: GenerationRun) -> None:
    """Raise UserInputError unless `run` has finished: "run 2 is still rendering (3 of 12 images)"."""
    reason = generation_run_readiness(run=run)
    if reason:
        raise UserInputError(f"run {run.pk} is {reason}; build the study once it has finished.")


def arm_labels_clean(*, arms: list[str], labels: Mapping[str, str] | None) -> dict[str, str]:
    """The non-empty display names of `arms`; a label for an arm the study lacks is refused."""
    labels = {arm: str(label).strip() for arm, label in (labels or {}).items() if str(label).strip()}
    unknown = sorted(set(labels) - set(arms))
    if unknown:
        raise UserInputError(f"display names for {unknown}, which the study does not compare ({arms}).")
    return labels


def arms_validate(*, run: GenerationRun, arms: list) -> None:
    """Raise UserInputError unless `arms` are two to seven distinct arms with images in `run`."""
    if not isinstance(arms, list) or len(arms) < 2 or len(set(arms)) != len(arms):
        raise UserInputError(f'a study compares at least two distinct arms, e.g. ["lora", "ti"]; got {arms}.')
    if len(arms) > MAX_STUDY_ARMS:
        # 21 pairs per prompt at seven arms: more would ask each participant for too many pages.
        raise UserInputError(
            f"a study compares at most {MAX_STUDY_ARMS} arms (the base model and {MAX_ADAPTERS} adapters); "
            f"got {len(arms)}."
        )
    run_arms = sorted(set(run.images.values_list("arm", flat=True)))
    absent = [arm for arm in arms if arm not in run_arms]
    if absent:
        raise UserInputError(f"arm(s) {absent} have no images in run {run.pk}; it has {run_arms}.")


def study_trials_build(
    *, study: Study, seed: int | None = None, attention_checks: int = 2, deviate: str = ""
) -> list[Trial]:
    """Build a trial for every prompt x pair of the study's arms, plus `attention_checks` instructed trials.

    A study with a locked analysis plan refuses, unless `deviate` gives the reason to record as a deviation.
    """
    study_plan_guard(
        study=study,
        change=f"building trials for arms {study.arms} with {attention_checks} attention check(s)",
        deviate=deviate,
    )
    return _trials_build(study=study, seed=seed, attention_checks=attention_checks)


def _trials_build(*, study: Study, seed: int | None, attention_checks: int) -> list[Trial]:
    run = study.generation_run
    arms_validate(run=run, arms=study.arms)
    images = list(run.images.select_related("prompt"))
    by_prompt: dict[Prompt, dict[str, GeneratedImage]] = defaultdict(dict)
    for image in sorted(images, key=lambda image: image.seed):
        if seed is None or image.seed == seed:
            # The first (lowest) seed wins unless a seed is chosen.
            by_prompt[image.prompt].setdefault(image.arm, image)
    if not by_prompt:
        raise UserInputError(f"run {run.pk} has no images with seed {seed}; pick one of its seeds.")
    trials = []
    for prompt in sorted(by_prompt, key=lambda prompt: (prompt.position, prompt.pk)):
        missing = [arm for arm in study.arms if arm not in by_prompt[prompt]]
        if missing:
            raise UserInputError(f"prompt {prompt.pk} ({prompt.landmark}) has no image for arm(s) {missing}.")
        for arm_a, arm_b in itertools.combinations(study.arms, 2):
            trials.append(
                Trial(
                    study=study,
                    position=len(trials),
                    prompt=prompt,
                    arm_a=arm_a,
                    arm_b=arm_b,
                    image_a=by_prompt[prompt][arm_a],
                    image_b=by_prompt[prompt][arm_b],
                )
            )
    regular = list(trials)
    rng = random.Random(study.pk)
    # The side each check asks for: as many "left" as "right" (off by one), in an order drawn from the study's
    # own random secret, so a participant who always picks one side fails some check wherever it falls.
    draw = random.Random(study.media_secret)
    sides = ["left", "right"] * (attention_checks // 2) + draw.sample(["left", "right"], attention_checks % 2)
    draw.shuffle(sides)
    for side in sides:
        model = rng.choice(regular)
        trials.append(
            Trial(
                study=study,
                position=len(trials),
                prompt=model.prompt,
                arm_a=model.arm_a,
                arm_b=model.arm_b,
                image_a=model.image_a,
                image_b=model.image_b,
                is_attention_check=True,
                instruction=f"Attention check: to show that you are reading, please choose the image on the {side}.",
                expected_choice=side,
            )
        )
    created = Trial.objects.bulk_create(trials)
    study_contents_changed(study.pk)
    return created


def completion_codes_parse(*, codes: Iterable[str] = (), redirects: Iterable[str] = ()) -> dict[str, dict]:
    """Study.completion_codes from "OUTCOME=CODE" and "OUTCOME=URL" strings (create_study's options), checked."""
    parsed: dict[str, dict] = {}
    for field, items in (("code", codes), ("redirect_url", redirects)):
        for item in items:
            outcome, sep, value = item.partition("=")
            if not sep:
                raise UserInputError(f"{item!r} is not OUTCOME=VALUE; e.g. full=C1A2B3 or declined=https://...")
            parsed.setdefault(outcome.strip(), {})[field] = value.strip()
    return completion_codes_validate(codes=parsed)


def completion_codes_validate(*, codes: Mapping) -> dict[str, dict]:
    """The completion codes as stored, or a UserInputError naming the bad outcome, code or URL."""
    cleaned: dict[str, dict] = {}
    for outcome, entry in codes.items():
        if outcome not in COMPLETION_OUTCOMES:
            raise UserInputError(f"unknown outcome {outcome!r}; use one of {', '.join(COMPLETION_OUTCOMES)}.")
        if not isinstance(entry, Mapping) or set(entry) - {"code", "redirect_url"}:
            raise UserInputError(f"completion for {outcome!r} must be {{\"code\": ..., \"redirect_url\": ...}}.")
        code, url = str(entry.get("code", "")), str(entry.get("redirect_url", ""))
        # Codes travel in URLs and are pasted by participants: letters, digits, - and _ only.
        if code and (len(code) > 50 or not code.replace("-", "").replace("_", "").isalnum() or not code.isascii()):
            raise UserInputError(f"completion code {code!r} for {outcome}: use up to 50 letters, digits, - or _.")
        if url:
            try:
                URLValidator(schemes=["https", "http"])(url)
            except ValidationError:
                raise UserInputError(f"completion redirect for {outcome} is not an http(s) URL: {url!r}.") from None
        if not code and not url:
            raise UserInputError(f"completion for {outcome!r} needs a code, a redirect URL or both.")
        cleaned[outcome] = {key: value for key, value in (("code", code), ("redirect_url", url)) if value}
    return cleaned


@transaction.atomic
def study_create_from_generation(
    *,
    run: GenerationRun,
    arms: list[str] | None = None,
    questions: str | list[dict] = "reference",
    title: str = "Which image do you prefer?",
    slug: str | None = None,
    attention_checks: int = 2,
    seed: int | None = None,
    target_participants: int = 50,
    completion_redirect_url: str = "",
    status: str = Study.Status.DRAFT,
    max_participants: int | None = None,
    completion_codes: Mapping | None = None,
    completion_code: str = "",
    arm_labels: Mapping[str, str] | None = None,
) -> Study:
    """Create a study comparing `arms` of `run`: questions ("reference", a JSON path or dicts) and all trials.

    max_participants caps admissions (None: no cap); completion_codes: {outcome: {"code", "redirect_url"}}.
    completion_code: the finished participants' code (empty: a random one); arm_labels: display names of arms.
    """
    generation_run_ready_check(run=run)
    if attention_checks < 0:
        raise UserInputError("--attention-checks must be 0 or more.")
    if max_participants is not None and max_participants < 1:
        raise UserInputError(f"--max-participants must be 1 or more (got {max_participants}); omit it for no cap.")
    if slug is None:
        slug = _unique_slug(slugify(title) or "study")
    elif Study.objects.filter(slug=slug).exists():
        raise UserInputError(f"a study with slug {slug!r} already exists; pass another --slug.")
    study = Study(
        title=title,
        slug=slug,
        status=status,
        consent_text=DEFAULT_CONSENT,
        instructions=DEFAULT_INSTRUCTIONS,
        target_participants=target_participants,
        completion_redirect_url=completion_redirect_url,
        max_participants=max_participants,
        completion_codes=completion_codes_validate(codes=completion_codes or {}),
        generation_run=run,
        arms=list(arms or run.arms),
    )
    study.arm_labels = arm_labels_clean(arms=study.arms, labels=arm_labels)
    if completion_code:
        completion_codes_validate(codes={"finished": {"code": completion_code}})  # the same rules as the others
        study.completion_code = completion_code
    try:
        study.full_clean()
    except ValidationError as error:
        raise UserInputError(f"the study is invalid: {'; '.join(error.messages)}") from None
    study.save()
    study_contents_build(study=study, questions=questions, seed=seed, attention_checks=attention_checks)
    if study.status == Study.Status.OPEN:
        study_stimuli_check(study=study)  # raising rolls the whole study back
    return study


@transaction.atomic
def study_contents_build(
    *,
    study: Study,
    questions: str | list[dict] = "reference",
    seed: int | None = None,
    attention_checks: int = 2,
    deviate: str = "",
) -> None:
    """Give a saved study without trials its questions (unless it has some) and its trials.

    A study with a locked analysis plan refuses, unless `deviate` gives the reason to record as a deviation.
    """
    study_plan_guard(
        study=study,
        change=f"building questions and trials (arms {study.arms}, {attention_checks} attention check(s))",
        deviate=deviate,
    )
    if not study.questions.exists():
        specs = questions_load(spec=questions) if isinstance(questions, str) else questions
        for position, spec in enumerate(specs):
            _question_add(study=study, position=position, spec=spec)
    _trials_build(study=study, seed=seed, attention_checks=attention_checks)


def study_status_set(*, study: Study, status: str) -> Study:
    """Open, close or return a study to draft; a study opens only when every image it serves can be read."""
    if status not in Study.Status.values:
        raise UserInputError(f"status {status!r} is unknown; use {', '.join(Study.Status.values)}.")
    if status == Study.Status.OPEN:
        if not study.trials.filter(is_attention_check=False).exists() or not study.questions.exists():
            raise UserInputError(f"study {study.slug} has no trials or no questions; nothing to answer yet.")
        study_stimuli_check(study=study)
    study.status = status
    study.full_clean()
    study.save(update_fields=["status"])
    return study


@transaction.atomic
def study_settings_update(
    *,
    study: Study,
    title: str,
    consent_text: str,
    instructions: str,
    target_participants: int,
    max_participants: int | None,
    completion_code: str,
    completion_redirect_url: str,
    completion_codes: Mapping | None,
    arm_labels: Mapping[str, str] | None,
    question_labels: Mapping[str, str] | None = None,
    deviate: str = "",
) -> Study:
    """Change what a researcher may change at any time: texts, recruitment, completion and display names.

    The planned number of participants is part of a locked analysis plan: changing it then is refused, unless
    `deviate` gives the reason to record as a deviation.
    """
    if target_participants != study.target_participants:
        study_plan_guard(
            study=study,
            change=f"the target participants ({study.target_participants} -> {target_participants})",
            deviate=deviate,
        )
    if max_participants is not None and max_participants < 1:
        raise UserInputError(
            f"max participants must be 1 or more (got {max_participants}); leave it empty for no cap."
        )
    study.title, study.consent_text, study.instructions = title, consent_text, instructions
    study.target_participants = target_participants
    study.max_participants = max_participants
    if completion_code:
        completion_codes_validate(codes={"finished": {"code": completion_code}})  # the same rules as the others
        study.completion_code = completion_code
    study.completion_redirect_url = completion_redirect_url
    study.completion_codes = completion_codes_validate(codes=completion_codes or {})
    study.arm_labels = arm_labels_clean(arms=study.arms, labels=arm_labels)
    try:
        study.full_clean()
    except ValidationError as error:
        raise UserInputError(f"the study is invalid: {'; '.join(error.messages)}") from None
    study.save()
    for question in study.questions.all():
        label = (question_labels or {}).get(question.key, question.label).strip()
        if label != question.label:
            question.label = label
            question.save(update_fields=["label"])
    return study
