"""Studies' writes: import stimuli, create studies, and move participants through them."""

import hashlib
import io
import itertools
import json
import random
import secrets
from collections import Counter, defaultdict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from django.core.exceptions import ValidationError
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.db import IntegrityError, transaction
from django.utils import timezone
from django.utils.text import slugify
from PIL import Image, UnidentifiedImageError

from generation.models import GeneratedImage, GenerationRun, Prompt, PromptSet
from peftlab.errors import UserInputError
from studies.models import EXTRA_OPTIONS, Participant, Question, Response, Study, Trial

MTURK_PREVIEW_ASSIGNMENT = "ASSIGNMENT_ID_NOT_AVAILABLE"

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
    "which one you prefer. It takes about ten minutes. We record your answers and how long you take; we do "
    "not ask for your name. You may stop at any time."
)
DEFAULT_INSTRUCTIONS = (
    "Each page shows two images side by side (one above the other on a phone) and asks one question. Choose "
    "the image on the left or the one on the right by clicking it, or press the \u2190 or \u2192 key. Some "
    "questions also offer \u201cBoth equally\u201d or \u201cNeither\u201d. There are no right or wrong "
    "answers, except on a few pages that tell you exactly what to choose: they check that you are reading."
)


# ---------------------------------------------------------------- stimuli


def _clean_png(path: Path) -> bytes:
    """The image's pixels re-saved as PNG: no text chunks, EXIF or ICC profile survive."""
    try:
        with Image.open(path) as image:
            image.load()
            pixels = image.convert("RGBA" if "A" in image.getbands() else "RGB")
    except (OSError, UnidentifiedImageError) as error:
        raise UserInputError(f"{path} is not a readable image ({error}); fix or remove it.") from None
    buffer = io.BytesIO()
    pixels.save(buffer, format="PNG")
    return buffer.getvalue()


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
        images = {arm: (entry["images"][arm], _clean_png(root / entry["images"][arm])) for arm in arms}
        references = [_clean_png(root / reference) for reference in entry.get("references", [])]
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
    """Validate one question spec and save it."""
    options = list(spec.get("options", []))
    unknown = set(options) - set(EXTRA_OPTIONS)
    if unknown:
        raise UserInputError(
            f"question {spec.get('key')!r}: unknown options {sorted(unknown)}; use both/neither."
        )
    question = Question(
        study=study,
        position=position,
        key=spec.get("key", ""),
        text=spec.get("text", ""),
        options=options,
        show_references=bool(spec.get("show_references", False)),
    )
    try:
        question.full_clean()
    except ValidationError as error:
        raise UserInputError(
            f"question {position + 1} ({dict(spec)}) is invalid: {error.messages[0]}"
        ) from None
    question.save()
    return question


def arms_validate(*, run: GenerationRun, arms: list) -> None:
    """Raise UserInputError unless `arms` are two or more distinct arms with images in `run`."""
    if not isinstance(arms, list) or len(arms) < 2 or len(set(arms)) != len(arms):
        raise UserInputError(f'a study compares at least two distinct arms, e.g. ["lora", "ti"]; got {arms}.')
    run_arms = sorted(set(run.images.values_list("arm", flat=True)))
    absent = [arm for arm in arms if arm not in run_arms]
    if absent:
        raise UserInputError(f"arm(s) {absent} have no images in run {run.pk}; it has {run_arms}.")


def study_trials_build(*, study: Study, seed: int | None = None, attention_checks: int = 2) -> list[Trial]:
    """Build a trial for every prompt x pair of the study's arms, plus `attention_checks` instructed trials."""
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
    for number in range(attention_checks):
        model = rng.choice(regular)
        side = ("left", "right")[number % 2]
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
    return Trial.objects.bulk_create(trials)


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
) -> Study:
    """Create a study comparing `arms` of `run`: questions ("reference", a JSON path or dicts) and all trials."""
    if attention_checks < 0:
        raise UserInputError("--attention-checks must be 0 or more.")
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
        generation_run=run,
        arms=list(arms or run.arms),
    )
    try:
        study.full_clean()
    except ValidationError as error:
        raise UserInputError(f"the study is invalid: {'; '.join(error.messages)}") from None
    study.save()
    specs = questions_load(spec=questions) if isinstance(questions, str) else questions
    for position, spec in enumerate(specs):
        _question_add(study=study, position=position, spec=spec)
    study_trials_build(study=study, seed=seed, attention_checks=attention_checks)
    return study


def study_status_set(*, study: Study, status: str) -> Study:
    """Open, close or return a study to draft."""
    study.status = status
    study.full_clean()
    study.save(update_fields=["status"])
    return study


# ---------------------------------------------------------------- participants


@dataclass(frozen=True)
class ExternalIds:
    """Who a participant is on a recruiting platform (parsed from the entry URL's query string)."""

    external_id: str = ""
    source: str = ""
    study_id: str = ""
    session_id: str = ""
    turk_submit_to: str = ""
    preview: bool = False

    @classmethod
    def from_query(cls, query: Mapping[str, str]) -> "ExternalIds":
        """Read Prolific's PROLIFIC_PID/STUDY_ID/SESSION_ID or MTurk's workerId/assignmentId/hitId/turkSubmitTo."""
        if query.get("PROLIFIC_PID"):
            return cls(
                external_id=query["PROLIFIC_PID"][:100],
                source=Participant.Source.PROLIFIC,
                study_id=query.get("STUDY_ID", "")[:100],
                session_id=query.get("SESSION_ID", "")[:100],
            )
        if query.get("assignmentId") == MTURK_PREVIEW_ASSIGNMENT:
            return cls(source=Participant.Source.MTURK, preview=True)
        if query.get("workerId"):
            submit_to = query.get("turkSubmitTo", "")
            return cls(
                external_id=query["workerId"][:100],
                source=Participant.Source.MTURK,
                study_id=query.get("hitId", "")[:100],
                session_id=query.get("assignmentId", "")[:100],
                # Only Amazon's own hosts may receive the assignment (no open redirect).
                turk_submit_to=submit_to
                if urlsplit(submit_to).hostname in {"www.mturk.com", "workersandbox.mturk.com"}
                else "",
            )
        return cls()

    def as_query(self) -> dict[str, str]:
        """The parameters to carry through the consent form."""
        if self.source == Participant.Source.PROLIFIC:
            return {
                "PROLIFIC_PID": self.external_id,
                "STUDY_ID": self.study_id,
                "SESSION_ID": self.session_id,
            }
        if self.source == Participant.Source.MTURK and self.external_id:
            return {
                "workerId": self.external_id,
                "hitId": self.study_id,
                "assignmentId": self.session_id,
                "turkSubmitTo": self.turk_submit_to,
            }
        return {}


def _balanced_sides(trials: list[Trial], rng: random.Random) -> dict[str, str]:
    """Which arm is on the left per trial, so each arm is left in half its trials (off by at most one).

    Orienting the arm graph's edges along Euler circuits (after pairing odd-degree arms with dummy edges)
    gives every arm as many "left" as "right" trials, up to one.
    """
    edges: list[tuple[str, str, Trial | None]] = [(t.arm_a, t.arm_b, t) for t in trials]
    degree = Counter(arm for a, b, _ in edges for arm in (a, b))
    odd = sorted(arm for arm, count in degree.items() if count % 2)
    rng.shuffle(odd)
    edges += [(odd[i], odd[i + 1], None) for i in range(0, len(odd), 2)]
    incident: dict[str, list[int]] = defaultdict(list)
    for index, (a, b, _) in enumerate(edges):
        incident[a].append(index)
        incident[b].append(index)
    for indices in incident.values():
        rng.shuffle(indices)
    used = [False] * len(edges)
    sides: dict[str, str] = {}
    starts = list(incident)
    rng.shuffle(starts)
    for start in starts:
        # Hierholzer-style walk: every edge leaves the arm we are at, so in = out at every arm.
        stack = [start]
        while stack:
            arm = stack[-1]
            while incident[arm] and used[incident[arm][-1]]:
                incident[arm].pop()
            if not incident[arm]:
                stack.pop()
                continue
            index = incident[arm].pop()
            used[index] = True
            a, b, trial = edges[index]
            other = b if arm == a else a
            if trial is not None:
                sides[str(trial.pk)] = arm  # the arm we leave from is shown on the left
            stack.append(other)
    return sides


def _draw_order(study: Study, seed: int) -> tuple[list[int], dict[str, str]]:
    """A participant's trial order and sides, drawn from their seed."""
    rng = random.Random(seed)
    trials = list(study.trials.all())
    regular = [t for t in trials if not t.is_attention_check]
    checks = [t for t in trials if t.is_attention_check]
    rng.shuffle(regular)
    order = [t.pk for t in regular]
    # Spread the checks evenly, never first, so they interrupt the real trials.
    for number, check in enumerate(checks):
        order.insert(max(1, round((number + 1) * len(regular) / (len(checks) + 1))) + number, check.pk)
    sides = _balanced_sides(regular, rng)
    for check in checks:
        sides[str(check.pk)] = rng.choice([check.arm_a, check.arm_b])
    return order, sides


def participant_find(*, study: Study, ids: ExternalIds, session_code: str | None) -> Participant | None:
    """The participant this visitor already is: by external id first, else by the browser session's code."""
    if ids.external_id:
        return Participant.objects.filter(study=study, external_id=ids.external_id).first()
    if session_code:
        return Participant.objects.filter(study=study, code=session_code).first()
    return None


def participant_start(
    *, study: Study, ids: ExternalIds, consent_given: bool, user_agent: str = ""
) -> Participant:
    """Record a consent decision: a new participant, or the existing one for the same external id."""
    if ids.preview:
        raise UserInputError("MTurk preview: accept the HIT before starting.")
    seed = secrets.randbits(48)
    order, sides = _draw_order(study, seed)
    defaults = {
        "external_source": ids.source,
        "external_study_id": ids.study_id,
        "external_session_id": ids.session_id,
        "turk_submit_to": ids.turk_submit_to,
        "seed": seed,
        "trial_order": order,
        "sides": sides,
        "consent": Participant.Consent.GIVEN if consent_given else Participant.Consent.DECLINED,
        "user_agent": user_agent[:300],
    }
    if ids.external_id:
        # A double-clicked consent or a second tab: the unique (study, external_id) makes one row win.
        participant, _ = Participant.objects.get_or_create(
            study=study, external_id=ids.external_id, defaults=defaults
        )
        return participant
    return Participant.objects.create(study=study, **defaults)


@dataclass(frozen=True)
class Page:
    """One page of a participant's run: instructions, a question about a trial, feedback, or done."""

    kind: str
    trial: Trial | None = None
    question: Question | None = None
    number: int = 0  # 1-based question-page number, for the progress display

    @property
    def choices(self) -> list[str]:
        """The answers this page accepts."""
        extra = self.question.options if self.question else []
        return ["left", "right", *extra] if self.kind == "question" else []


def participant_pages(*, participant: Participant) -> list[Page]:
    """Every page of the participant's run in order; `participant.position` indexes it."""
    trials = Trial.objects.filter(study_id=participant.study_id).select_related(
        "prompt", "image_a", "image_b"
    )
    by_pk = {trial.pk: trial for trial in trials}
    questions = list(Question.objects.filter(study_id=participant.study_id))
    pages = [Page("instructions")]
    for pk in participant.trial_order:
        trial = by_pk[pk]
        for question in [None] if trial.is_attention_check else questions:
            pages.append(Page("question", trial, question, number=len(pages)))
    return [*pages, Page("feedback"), Page("done")]


def participant_page_shown(*, participant: Participant) -> None:
    """Remember when the current page was first shown (a refresh keeps the first time)."""
    if participant.page_shown_at is None:
        participant.page_shown_at = timezone.now()
        Participant.objects.filter(pk=participant.pk, page_shown_at__isnull=True).update(
            page_shown_at=participant.page_shown_at
        )


def _advance(participant: Participant, step: int) -> Participant | None:
    """Lock the participant; None unless `step` is the page they are on (a stale, replayed or forged post)."""
    locked = Participant.objects.select_for_update().get(pk=participant.pk)
    if locked.consent != Participant.Consent.GIVEN or locked.finished_at or step != locked.position:
        return None
    return locked


def _next_page(participant: Participant) -> None:
    participant.position += 1
    participant.page_shown_at = None
    participant.save(update_fields=["position", "page_shown_at"])


@transaction.atomic
def participant_instructions_read(*, participant: Participant, step: int) -> bool:
    """Move past the instructions; False if `step` is not the current page."""
    locked = _advance(participant, step)
    if locked is None or participant_pages(participant=locked)[step].kind != "instructions":
        return False
    _next_page(locked)
    return True


@transaction.atomic
def response_record(*, participant: Participant, step: int, choice: str) -> bool:
    """Store the answer to the current page and move on; False (nothing stored) if `step` is stale."""
    locked = _advance(participant, step)
    if locked is None:
        return False
    page = participant_pages(participant=locked)[step]
    if page.kind != "question":
        return False
    if choice not in page.choices:
        raise UserInputError(f"choose one of {', '.join(page.choices)}.")
    trial = page.trial
    left_arm = locked.sides[str(trial.pk)]
    right_arm = trial.arm_b if left_arm == trial.arm_a else trial.arm_a
    answered_at = timezone.now()
    shown_at = min(locked.page_shown_at or answered_at, answered_at)
    try:
        with transaction.atomic():
            Response.objects.create(
                participant=locked,
                trial=trial,
                question=page.question,
                left_arm=left_arm,
                right_arm=right_arm,
                choice=choice,
                chosen_arm={"left": left_arm, "right": right_arm}.get(choice, ""),
                response_ms=round((answered_at - shown_at).total_seconds() * 1000),
                shown_at=shown_at,
                answered_at=answered_at,
            )
    except IntegrityError:
        return False  # already answered (the unique constraint): keep the first answer
    _next_page(locked)
    return True


@transaction.atomic
def participant_finish(*, participant: Participant, step: int, feedback: str = "") -> bool:
    """Save the optional feedback and mark the participant finished; False if `step` is stale."""
    locked = _advance(participant, step)
    if locked is None or participant_pages(participant=locked)[step].kind != "feedback":
        return False
    locked.feedback = feedback.strip()[:5000]
    locked.finished_at = timezone.now()
    locked.position += 1
    locked.save(update_fields=["feedback", "finished_at", "position"])
    return True


def participant_answer_all(
    *, participant: Participant, choose: Callable[[Participant, Page], str], feedback: str = ""
) -> Participant:
    """Walk every page through the services, answering each question with `choose` (pilots with bots, tests)."""
    for step, page in enumerate(participant_pages(participant=participant)):
        participant.refresh_from_db()
        if page.kind == "instructions":
            participant_instructions_read(participant=participant, step=step)
        elif page.kind == "question":
            response_record(participant=participant, step=step, choice=choose(participant, page))
        elif page.kind == "feedback":
            participant_finish(participant=participant, step=step, feedback=feedback)
    participant.refresh_from_db()
    return participant


def completion_url(*, study: Study) -> str:
    """The study's completion redirect with cc=<completion code> set (Prolific's convention)."""
    parts = urlsplit(study.completion_redirect_url)
    query = [(key, value) for key, value in parse_qsl(parts.query) if key != "cc"]
    query.append(("cc", study.completion_code))
    return urlunsplit(parts._replace(query=urlencode(query)))
