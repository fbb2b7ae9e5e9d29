"""The participant walk: enter with consent, read the instructions, answer one page per trial x question, finish.

Every step locks the participant's row and checks that the post names the page they are on, so double clicks,
replays and pages left with Back store nothing.
"""

import random
import secrets
from collections import Counter, defaultdict
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from django.db import IntegrityError, transaction
from django.utils import timezone

from peftlab.errors import UserInputError
from studies import selectors
from studies.allocation import allocate_trials
from studies.browsers import browser_parse
from studies.models import Participant, Question, Response, Study, Trial
from studies.signals import participant_finished
from studies.stopping import StoppingRule

MTURK_PREVIEW_ASSIGNMENT = "ASSIGNMENT_ID_NOT_AVAILABLE"
# Where MTurk may tell us to post the assignment, by exact origin: parsing a host out of an arbitrary URL
# disagrees with browsers ("https://evil.example\\@www.mturk.com" goes to evil.example in Chromium).
MTURK_SUBMIT_ORIGINS = ("https://www.mturk.com", "https://workersandbox.mturk.com")
FEEDBACK_MAX_CHARS = 5000
# A browser's time on one page beyond a day is a clock gone wrong, not an answer time: it is not stored.
CLIENT_MS_MAX = 24 * 3600 * 1000


class StudyFull(Exception):
    """The study has admitted its `max_participants` (in progress included): nobody else may start."""


class StudyStopped(Exception):
    """The study's preregistered stopping rule has been met: nobody new may start (those in progress finish)."""


@dataclass(frozen=True)
class ExternalIds:
    """Who a participant is on a recruiting platform (parsed from the entry URL's query string)."""

    external_id: str = ""
    source: str = ""
    study_id: str = ""
    session_id: str = ""
    turk_submit_to: str = ""
    preview: bool = False

    def __post_init__(self) -> None:
        if self.source not in Participant.Source.values:
            raise UserInputError(f"unknown participant source {self.source!r}; use one of {Participant.Source.values}.")
        for value in (self.external_id, self.study_id, self.session_id, self.turk_submit_to):
            if any(ord(character) < 32 or ord(character) == 127 for character in value):
                raise UserInputError("the link's participant ids contain control characters; use the link as given.")

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
            submit_to = query.get("turkSubmitTo", "").rstrip("/")
            return cls(
                external_id=query["workerId"][:100],
                source=Participant.Source.MTURK,
                study_id=query.get("hitId", "")[:100],
                session_id=query.get("assignmentId", "")[:100],
                # Only Amazon's own origins may receive the assignment (no open redirect).
                turk_submit_to=submit_to if submit_to in MTURK_SUBMIT_ORIGINS else "",
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


def _allocates(study: Study) -> bool:
    """Whether the study's preregistered rule allocates pairs adaptively (an unreadable rule shows all pairs;
    the dashboard says what is wrong with it)."""
    try:
        rule = StoppingRule.from_study(study)
    except UserInputError:
        return False
    return rule is not None and rule.allocates(study.arms)


def _draw_order(study: Study, seed: int) -> tuple[list[int], dict[str, str]]:
    """A participant's trial order and sides, drawn from their seed."""
    rng = random.Random(seed)
    trials = list(selectors.study_contents(study=study).trials.values())
    regular = [t for t in trials if not t.is_attention_check]
    checks = [t for t in trials if t.is_attention_check]
    if _allocates(study):
        regular = allocate_trials(regular, study.pair_weights or {}, rng)
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
    *,
    study: Study,
    ids: ExternalIds,
    consent_given: bool,
    entry_nonce: str = "",
    user_agent: str = "",
    is_pilot: bool = False,
    viewport: tuple[int, int] | None = None,
    is_touch: bool | None = None,
) -> Participant:
    """Record a consent decision: a new participant, or the one already made by the same external id or form.

    entry_nonce: the consent form's one-time value, so a double-clicked consent without an external id (two
    posts at the same instant from one browser) makes one participant. Raises StudyFull when agreeing would
    admit more than the study's max_participants; declining is always recorded. A pilot (is_pilot) is
    never counted against the cap and is left out of analyses. viewport (width, height in CSS pixels) and
    is_touch are what the consent page's browser reported; the browser's family and version come from
    `user_agent`.
    """
    if ids.preview:
        raise UserInputError("MTurk preview: accept the HIT before starting.")
    seed = secrets.randbits(48)
    order, sides = _draw_order(study, seed)
    browser = browser_parse(user_agent)
    defaults = {
        "external_source": ids.source,
        "external_study_id": ids.study_id,
        "external_session_id": ids.session_id,
        "turk_submit_to": ids.turk_submit_to,
        "entry_nonce": entry_nonce,
        "seed": seed,
        "trial_order": order,
        "sides": sides,
        "consent": Participant.Consent.GIVEN if consent_given else Participant.Consent.DECLINED,
        "user_agent": user_agent[:300],
        "is_pilot": is_pilot,
        "viewport_width": viewport[0] if viewport else None,
        "viewport_height": viewport[1] if viewport else None,
        "is_touch": is_touch,
        "browser_family": browser.family,
        "browser_version": browser.version,
    }
    if ids.external_id:
        key = {"external_id": ids.external_id}
    elif entry_nonce:
        key = {"entry_nonce": entry_nonce}
    else:
        key = {}
    with transaction.atomic():
        if consent_given and not is_pilot:
            # One admission at a time per study: the row lock makes "count, then insert" atomic, so concurrent
            # consents can never admit more than the cap (the count alone would let them all through), and it
            # orders every admission against analysis.stopping setting stopped_at: nobody is admitted after.
            locked = Study.objects.select_for_update().only("max_participants", "stopped_at").get(pk=study.pk)
            existing = Participant.objects.filter(study=study, **key).first() if key else None
            if existing is not None:
                return existing
            if locked.stopped_at is not None:
                raise StudyStopped(f"study {study.slug} has met its stopping rule and admits nobody new")
            if locked.max_participants is not None and (
                selectors.study_admitted_count(study=study) >= locked.max_participants
            ):
                raise StudyFull(f"study {study.slug} has admitted its {locked.max_participants} participants")
        if not key:
            return Participant.objects.create(study=study, **defaults)
        # A double-clicked consent or a second tab: a unique constraint makes one row win, the other post finds it.
        participant, _ = Participant.objects.get_or_create(study=study, **key, defaults=defaults)
        return participant


def participant_preview(*, study: Study, seed: int = 0) -> Participant:
    """An unsaved participant drawn from `seed`, for staff to walk the study's pages without recording anything."""
    order, sides = _draw_order(study, seed)
    return Participant(study=study, code=f"preview-{seed}", seed=seed, trial_order=order, sides=sides)


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
    """Every page of the participant's run in order; `participant.position` indexes it.

    The list depends only on the participant's trial order and the study's contents (kept per process,
    selectors.study_contents), so it is built once per Participant object: the view and the service a post
    goes through share it.
    """
    if getattr(participant, "_pages", None) is None:
        contents = selectors.study_contents(study=participant.study)
        by_pk, questions = contents.trials, contents.questions
        pages = [Page("instructions")]
        for pk in participant.trial_order:
            trial = by_pk[pk]
            for question in [None] if trial.is_attention_check else questions:
                pages.append(Page("question", trial, question, number=len(pages)))
        participant._pages = [*pages, Page("feedback"), Page("done")]
    return participant._pages


def participant_page_shown(*, participant: Participant) -> None:
    """Remember when the current page was first shown (a refresh keeps the first time)."""
    if participant.page_shown_at is None:
        participant.page_shown_at = timezone.now()
        Participant.objects.filter(pk=participant.pk, page_shown_at__isnull=True).update(
            page_shown_at=participant.page_shown_at
        )


def _lock_page(participant: Participant, step: int, kind: str) -> tuple[Participant, Page] | None:
    """Lock the participant; their page `step` if it is the page they are on and a `kind` page, else None.

    None means a stale, replayed or forged post: the caller stores nothing.
    """
    locked = Participant.objects.select_for_update().get(pk=participant.pk)
    if locked.consent != Participant.Consent.GIVEN or locked.finished_at or step != locked.position:
        return None
    page = participant_pages(participant=participant)[step]  # the same list as `locked`'s (see there)
    return (locked, page) if page.kind == kind else None


def _next_page(participant: Participant) -> None:
    participant.position += 1
    participant.page_shown_at = None
    participant.save(update_fields=["position", "page_shown_at"])


@transaction.atomic
def participant_instructions_read(*, participant: Participant, step: int) -> bool:
    """Move past the instructions; False if `step` is not the current page."""
    current = _lock_page(participant, step, "instructions")
    if current is None:
        return False
    _next_page(current[0])
    return True


@transaction.atomic
def response_record(*, participant: Participant, step: int, choice: str, client_ms: int | None = None) -> bool:
    """Store the answer to the current page and move on; False (nothing stored) if `step` is stale.

    client_ms: the time on the page as the browser measured it (None when it sent none, or nonsense).
    """
    current = _lock_page(participant, step, "question")
    if current is None:
        return False
    locked, page = current
    if choice not in page.choices:
        raise UserInputError(f"choose one of {', '.join(page.choices)}.")
    shown = locked.shown(page.trial)
    answered_at = timezone.now()
    shown_at = min(locked.page_shown_at or answered_at, answered_at)
    try:
        with transaction.atomic():
            Response.objects.create(
                participant=locked,
                trial=page.trial,
                question=page.question,
                left_arm=shown.left_arm,
                right_arm=shown.right_arm,
                choice=choice,
                chosen_arm=shown.arm(choice),
                response_ms=round((answered_at - shown_at).total_seconds() * 1000),
                client_ms=client_ms if client_ms is not None and 0 <= client_ms <= CLIENT_MS_MAX else None,
                shown_at=shown_at,
                answered_at=answered_at,
            )
    except IntegrityError:
        return False  # already answered (the unique constraint): keep the first answer
    _next_page(locked)
    return True


def feedback_normalize(text: str) -> str:
    """Feedback as stored: line breaks as one character (browsers post CRLF), no surrounding blanks."""
    return text.replace("\r\n", "\n").replace("\r", "\n").strip()


@transaction.atomic
def participant_finish(*, participant: Participant, step: int, feedback: str = "") -> bool:
    """Save the optional feedback and mark the participant finished; False if `step` is stale.

    Feedback over FEEDBACK_MAX_CHARS raises UserInputError and finishes nothing (it is never cut silently).
    """
    feedback = feedback_normalize(feedback)
    if len(feedback) > FEEDBACK_MAX_CHARS:
        raise UserInputError(
            f"the feedback has {len(feedback):,} characters; shorten it to {FEEDBACK_MAX_CHARS:,} or fewer."
        )
    current = _lock_page(participant, step, "feedback")
    if current is None:
        return False
    locked = current[0]
    locked.feedback = feedback
    locked.finished_at = timezone.now()
    locked.position += 1
    locked.save(update_fields=["feedback", "finished_at", "position"])
    # robust: a listener's error (e.g. the stopping check) is logged, never shown to the participant.
    transaction.on_commit(
        lambda: participant_finished.send(sender=Participant, participant=locked), robust=True
    )
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
