"""Studies' reads: studies by slug, flat response rows for analysis, dashboard numbers, blinded media."""

import hashlib
import hmac
import math
import statistics
from collections import Counter, defaultdict
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from django.core.files.storage import default_storage
from django.db.models import Count, F
from django.http import Http404

from generation.models import GeneratedImage
from peftlab.errors import UserInputError
from studies.models import Participant, Question, Response, Study, Trial


def study_get_by_slug(*, slug: str) -> Study:
    """The study with this slug, or a UserInputError naming the slugs that exist."""
    study = Study.objects.filter(slug=slug).select_related("generation_run").first()
    if study is None:
        known = ", ".join(Study.objects.values_list("slug", flat=True)[:20]) or "none yet"
        raise UserInputError(f"no study with slug {slug!r}; known studies: {known}.")
    return study


def study_admitted_count(*, study: Study) -> int:
    """Participants who agreed to take part, finished or still in progress (pilots are not recruits)."""
    return Participant.objects.filter(study=study, consent=Participant.Consent.GIVEN, is_pilot=False).count()


def study_is_full(*, study: Study) -> bool:
    """Whether the study has admitted its max_participants (never, without a cap)."""
    return study.max_participants is not None and study_admitted_count(study=study) >= study.max_participants


COMPLETION_OUTCOMES = ("finished", "failed_attention", "declined", "full")


@dataclass(frozen=True)
class Completion:
    """What a participant is given at the end for one outcome: a code to paste, and where to go ("" if nowhere)."""

    outcome: str
    code: str
    redirect_url: str


def study_completion(*, study: Study, outcome: str) -> Completion:
    """The code and redirect for `outcome`, from `study.completion_codes`.

    "finished" falls back to the study's completion_code and completion_redirect_url, and "failed_attention"
    to "finished" (they did finish; a distinct code lets the researcher tell them apart). "declined" and
    "full" have no code unless set. A code without a redirect of its own goes to the study's completion
    redirect (Prolific's one URL) with cc=CODE.
    """
    if outcome not in COMPLETION_OUTCOMES:
        raise ValueError(f"unknown outcome {outcome!r}")
    configured = (study.completion_codes or {}).get(outcome) or {}
    if outcome == "failed_attention" and not configured:
        return study_completion(study=study, outcome="finished")
    code = configured.get("code", "")
    redirect_url = configured.get("redirect_url", "")
    if outcome == "finished":
        code = code or study.completion_code
        redirect_url = redirect_url or study.completion_redirect_url
    elif not redirect_url and code:
        redirect_url = study.completion_redirect_url
    if redirect_url and code:
        parts = urlsplit(redirect_url)
        query = [(key, value) for key, value in parse_qsl(parts.query) if key != "cc"]
        redirect_url = urlunsplit(parts._replace(query=urlencode([*query, ("cc", code)])))
    return Completion(outcome=outcome, code=code, redirect_url=redirect_url)


def participant_failed_attention(*, participant: Participant) -> bool:
    """Whether the participant answered an attention check other than it asked."""
    return (
        Response.objects.filter(participant=participant, trial__is_attention_check=True)
        .exclude(choice=F("trial__expected_choice"))
        .exists()
    )


def participant_completion(*, participant: Participant) -> Completion:
    """The completion for a participant who declined or finished (failed attention checks or not)."""
    if participant.consent == Participant.Consent.DECLINED:
        outcome = "declined"
    elif participant_failed_attention(participant=participant):
        outcome = "failed_attention"
    else:
        outcome = "finished"
    return study_completion(study=participant.study, outcome=outcome)


RESPONSE_ROW_KEYS = (
    "participant", "external_id", "trial", "trial_index", "question", "question_text", "landmark", "prompt",
    "left_arm", "right_arm", "choice", "chosen_arm", "response_ms", "client_ms", "shown_at", "answered_at",
    "is_attention_check", "attention_passed", "participant_failed_attention", "participant_finished",
    "participant_is_pilot", "generation_run", "left_image", "right_image", "left_seed", "right_seed", "left_rendered_prompt",
    "right_rendered_prompt",
)  # fmt: skip


def study_response_rows(*, study: Study, include_pilot: bool = False) -> list[dict]:
    """One dict per response, in participant then answer order (see the keys below; analysis codes against them).

    participant is pseudonymous ("P0007"); question is the question's key, or "attention_check" (with the
    instruction as question_text) for instructed-response trials. Pilots' responses only with include_pilot.
    """
    pilot_filter = {} if include_pilot else {"participant__is_pilot": False}
    responses = list(
        Response.objects.filter(participant__study=study, **pilot_filter)
        .select_related("participant", "trial__prompt", "trial__image_a", "trial__image_b", "question")
        .order_by("participant_id", "answered_at", "id")
    )
    failed = participants_failed_attention(study=study)
    order_index: dict[int, dict[int, int]] = {}
    rows = []
    for response in responses:
        participant, trial = response.participant, response.trial
        # The trial stores its images by arm; the response says which arm was on the left.
        left, right = (
            (trial.image_a, trial.image_b)
            if response.left_arm == trial.arm_a
            else (trial.image_b, trial.image_a)
        )
        if participant.pk not in order_index:
            order_index[participant.pk] = {pk: index for index, pk in enumerate(participant.trial_order)}
        rows.append(
            {
                "participant": participant.label,
                "external_id": participant.external_id,
                "trial": trial.pk,
                "trial_index": order_index[participant.pk][trial.pk],
                "question": response.question.key if response.question else "attention_check",
                "question_text": response.question.text if response.question else trial.instruction,
                "landmark": trial.prompt.landmark,
                "prompt": trial.prompt.text,
                "left_arm": response.left_arm,
                "right_arm": response.right_arm,
                "choice": response.choice,
                "chosen_arm": response.chosen_arm,
                "response_ms": int(response.response_ms),
                "client_ms": response.client_ms,
                "shown_at": response.shown_at.isoformat(),
                "answered_at": response.answered_at.isoformat(),
                "is_attention_check": trial.is_attention_check,
                "attention_passed": response.choice == trial.expected_choice
                if trial.is_attention_check
                else None,
                "participant_failed_attention": participant.pk in failed,
                "participant_finished": participant.finished_at is not None,
                "participant_is_pilot": participant.is_pilot,
                "generation_run": left.run_id,
                "left_image": left.pk,
                "right_image": right.pk,
                "left_seed": left.seed,
                "right_seed": right.seed,
                "left_rendered_prompt": left.rendered_prompt,
                "right_rendered_prompt": right.rendered_prompt,
            }
        )
    return rows


def participants_failed_attention(*, study: Study) -> set[int]:
    """The pks of participants who answered an attention check other than it asked."""
    return set(
        Response.objects.filter(trial__study=study, trial__is_attention_check=True)
        .exclude(choice=F("trial__expected_choice"))
        .values_list("participant_id", flat=True)
    )


PARTICIPANT_ROW_KEYS = (
    "participant", "external_id", "external_source", "is_pilot", "consent", "outcome", "started_at",
    "finished_at", "minutes", "responses", "viewport_width", "viewport_height", "is_touch", "browser_family",
    "browser_version", "feedback",
)  # fmt: skip


def study_participant_rows(*, study: Study, include_pilot: bool = False) -> list[dict]:
    """One dict per participant (the keys above): who they were, how it ended, their screen and browser, feedback.

    outcome: finished, failed_attention, declined, or in_progress; minutes: from consent to the last page.
    """
    participants = study.participants.annotate(answered=Count("responses")).order_by("pk")
    if not include_pilot:
        participants = participants.filter(is_pilot=False)
    failed = participants_failed_attention(study=study)
    rows = []
    for participant in participants:
        if participant.consent == Participant.Consent.DECLINED:
            outcome = "declined"
        elif participant.pk in failed:
            outcome = "failed_attention"
        else:
            outcome = "finished" if participant.finished_at else "in_progress"
        finished = participant.finished_at
        rows.append(
            {
                "participant": participant.label,
                "external_id": participant.external_id,
                "external_source": participant.external_source,
                "is_pilot": participant.is_pilot,
                "consent": participant.consent,
                "outcome": outcome,
                "started_at": participant.started_at.isoformat(),
                "finished_at": finished.isoformat() if finished else None,
                "minutes": (finished - participant.started_at).total_seconds() / 60 if finished else None,
                "responses": participant.answered,
                "viewport_width": participant.viewport_width,
                "viewport_height": participant.viewport_height,
                "is_touch": participant.is_touch,
                "browser_family": participant.browser_family,
                "browser_version": participant.browser_version,
                "feedback": participant.feedback,
            }
        )
    return rows


@dataclass(frozen=True)
class Feedback:
    """One participant's feedback as the dashboard lists it."""

    participant: str
    is_pilot: bool
    finished_at: datetime | None
    text: str


def study_feedback(*, study: Study) -> list[Feedback]:
    """Every non-empty feedback text of the study, the newest first (pilots' flagged)."""
    participants = study.participants.exclude(feedback="").order_by("-finished_at", "-pk")
    return [Feedback(p.label, p.is_pilot, p.finished_at, p.feedback) for p in participants]


# A question page without a pilot to time it: a pairwise judgment takes a few seconds; consent, instructions
# and feedback about a minute.
SECONDS_PER_PAGE = 6
SECONDS_AROUND = 60


def study_question_pages(*, study: Study) -> int:
    """How many question pages every participant answers: regular trials x questions, plus attention checks."""
    contents = study_contents(study=study)
    regular = sum(not trial.is_attention_check for trial in contents.trials.values())
    return regular * len(contents.questions) + len(contents.trials) - regular


def study_expected_minutes(*, study: Study) -> int:
    """About how many minutes the study takes a participant (for the consent text), rounded up, at least 1.

    With finished pilots: the study's question pages times the pilots' median minutes per answered page (their
    time includes consent, instructions and feedback). Without: SECONDS_PER_PAGE per page plus SECONDS_AROUND.
    """
    pages = study_question_pages(study=study)
    pilots = study.participants.filter(is_pilot=True, finished_at__isnull=False).annotate(
        answered=Count("responses")
    )
    per_page = [
        (pilot.finished_at - pilot.started_at).total_seconds() / pilot.answered
        for pilot in pilots
        if pilot.answered
    ]
    seconds = pages * statistics.median(per_page) if per_page else pages * SECONDS_PER_PAGE + SECONDS_AROUND
    return max(1, math.ceil(seconds / 60))


def study_consent_text(*, study: Study) -> str:
    """The consent text as a participant reads it: `{duration}` becomes the expected time ("about 4 minutes")."""
    minutes = study_expected_minutes(study=study) if "{duration}" in study.consent_text else 0
    return study.consent_text.replace("{duration}", f"{minutes} minute{'s' if minutes != 1 else ''}")


@dataclass(frozen=True)
class TrialCount:
    """How many answers one trial has received (all questions together)."""

    trial: Trial
    responses: int


@dataclass(frozen=True)
class StudyStats:
    """What the staff dashboard shows."""

    started: int
    declined: int
    pilots: int
    finished: int
    failed_attention: int
    median_minutes: float | None
    responses: int
    trials: list[TrialCount]


def study_stats(*, study: Study) -> StudyStats:
    """Participants started/declined/finished, median completion time and responses per trial (pilots apart)."""
    everyone = list(study.participants.all())
    participants = [p for p in everyone if not p.is_pilot]
    durations = [(p.finished_at - p.started_at).total_seconds() / 60 for p in participants if p.finished_at]
    counts = dict(
        Response.objects.filter(trial__study=study, participant__is_pilot=False)
        .values_list("trial")
        .annotate(n=Count("id"))
        .order_by()
    )
    return StudyStats(
        started=sum(p.consent == Participant.Consent.GIVEN for p in participants),
        declined=sum(p.consent == Participant.Consent.DECLINED for p in participants),
        pilots=len(everyone) - len(participants),
        finished=len(durations),
        failed_attention=len(participants_failed_attention(study=study) & {p.pk for p in participants}),
        median_minutes=round(statistics.median(durations), 1) if durations else None,
        responses=sum(counts.values()),
        trials=[TrialCount(t, counts.get(t.pk, 0)) for t in study.trials.select_related("prompt")],
    )


def participant_sides_count(*, participant: Participant) -> dict[str, Counter]:
    """Per arm, how often it is shown left and right in the participant's regular trials."""
    counts: dict[str, Counter] = defaultdict(Counter)
    for trial in Trial.objects.filter(pk__in=participant.trial_order, is_attention_check=False):
        shown = participant.shown(trial)
        counts[shown.left_arm]["left"] += 1
        counts[shown.right_arm]["right"] += 1
    return counts


@dataclass(frozen=True)
class ArmAudit:
    """How the randomisation placed one arm across participants: sides, and early or late in the session.

    left/right: times shown on each side; first_half/second_half: times in the first or second half of a
    participant's regular trials; mean_position: its average place in the session (0 = first trial, 1 = last).
    """

    arm: str
    label: str
    left: int
    right: int
    first_half: int
    second_half: int
    mean_position: float | None

    @property
    def left_share(self) -> float | None:
        """Share of its showings on the left (0.5 when balanced)."""
        return self.left / (self.left + self.right) if self.left + self.right else None


def study_randomisation_audit(*, study: Study) -> list[ArmAudit]:
    """Per arm, the sides and session positions assigned to the participants who consented (pilots left out)."""
    trials = {t.pk: t for t in Trial.objects.filter(study=study, is_attention_check=False)}
    counts = {arm: Counter() for arm in study.arms}
    positions: dict[str, list[float]] = defaultdict(list)
    participants = study.participants.filter(consent=Participant.Consent.GIVEN, is_pilot=False).only(
        "trial_order", "sides"
    )
    for participant in participants:
        order = [pk for pk in participant.trial_order if pk in trials]
        for index, pk in enumerate(order):
            shown = participant.shown(trials[pk])
            place = index / (len(order) - 1) if len(order) > 1 else 0.5
            half = "first_half" if index < len(order) / 2 else "second_half"
            for arm, side in ((shown.left_arm, "left"), (shown.right_arm, "right")):
                counts.setdefault(arm, Counter()).update([side, half])
                positions[arm].append(place)
    labels = study.arm_labels or {}
    return [
        ArmAudit(
            arm=arm,
            label=labels.get(arm) or arm,
            left=tally["left"],
            right=tally["right"],
            first_half=tally["first_half"],
            second_half=tally["second_half"],
            mean_position=statistics.fmean(positions[arm]) if positions[arm] else None,
        )
        for arm, tally in counts.items()
    ]


# ---------------------------------------------------------------- a study's contents, kept per process


@dataclass(frozen=True)
class StudyContents:
    """What every participant page of one study reads: trials (with prompts), questions, image file names.

    Shared between requests: treat it as read-only.
    """

    version: tuple[str, int]
    trials: dict[int, Trial]
    questions: list[Question]
    image_names: dict[int, str]


_contents: dict[int, StudyContents] = {}


def study_contents(*, study: Study) -> StudyContents:
    """The study's trials, questions and image names, loaded once per process and per `contents_version`.

    Participant requests read the study row anyway, so the version costs no query; an edit to a trial or
    question raises it (studies.models), and every worker reloads on its next request. The study's random
    media_secret is part of the version: a new study that reuses a pk (a recreated database) never matches.
    """
    version = (study.media_secret, study.contents_version)
    cached = _contents.get(study.pk)
    if cached is None or cached.version != version:
        trials = {
            trial.pk: trial for trial in Trial.objects.filter(study_id=study.pk).select_related("prompt")
        }
        images = {pk for trial in trials.values() for pk in (trial.image_a_id, trial.image_b_id)}
        cached = StudyContents(
            version=version,
            trials=trials,
            questions=list(Question.objects.filter(study_id=study.pk)),
            image_names=dict(GeneratedImage.objects.filter(pk__in=images).values_list("pk", "image")),
        )
        _contents[study.pk] = cached
    return cached


# ---------------------------------------------------------------- blinded media


def media_token(*, participant: Participant, kind: str, ident: str | int) -> str:
    """An opaque per-participant name for an image: says nothing of arm, prompt or file, differs per person.

    An HMAC under the study's own random `media_secret`, not SECRET_KEY: the development key is public, and
    image ids run in blocks per arm, so a SECRET_KEY-based token could be inverted to the arm by anyone.
    """
    message = f"{participant.code}:{kind}:{ident}".encode()
    return hmac.new(participant.study.media_secret.encode(), message, hashlib.sha256).hexdigest()[:32]


def study_pilot_key(*, study: Study) -> str:
    """The key of the study's pilot link (?pilot=KEY): shown to staff only, derived from the study's secret."""
    return hmac.new(study.media_secret.encode(), b"pilot link", hashlib.sha256).hexdigest()[:24]


def media_source(*, participant: Participant, token: str) -> Path | str:
    """The file behind a participant's media token (an absolute path or a media storage name), or Http404."""
    contents = study_contents(study=participant.study)
    for trial in contents.trials.values():
        for image in (trial.image_a_id, trial.image_b_id):
            if hmac.compare_digest(media_token(participant=participant, kind="image", ident=image), token):
                return contents.image_names[image]
        for reference in trial.prompt.reference_images:
            if hmac.compare_digest(
                media_token(participant=participant, kind="reference", ident=reference), token
            ):
                return reference_source(reference)
    raise Http404("no such image")


def reference_source(reference: str) -> Path | str:
    """Where a prompt's reference image lives: imported ones in media storage, older rows may hold paths."""
    path = Path(reference)
    return path if path.is_absolute() else reference


def media_read(*, source: Path | str) -> bytes:
    """The bytes of a file named by `media_source`."""
    if isinstance(source, Path):
        return source.read_bytes()
    with default_storage.open(source, "rb") as handle:
        return handle.read()
