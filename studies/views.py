"""Studies' pages: participants enter, consent, answer one page per trial x question, and finish.

The participant path imports nothing heavy (no torch, diffusers, pandas or matplotlib): a web worker that
only serves participants stays small and starts fast. Participant pages (`participant_view`) work inside
MTurk's cross-site frame, where the browser sends no cookie: the participant's code is in the URL, posts are
checked by origin, and nothing a participant needs is kept in the session or in flash messages.
"""

import hmac
import logging
import secrets
from collections.abc import Callable

from django.contrib.admin.views.decorators import staff_member_required
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseBadRequest
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils.cache import get_conditional_response
from django.views.decorators.http import require_http_methods, require_safe

from generation.pngs import png_clean
from peftlab.errors import UserInputError
from peftlab.security import participant_view
from studies import selectors, services
from studies.forms import ConsentForm, FeedbackForm
from studies.models import Participant, Study
from studies.stopping import StoppingRule

logger = logging.getLogger(__name__)

CHOICE_LABELS = {"left": "Left image", "right": "Right image", "both": "Both equally", "neither": "Neither"}


def _session_key(study: Study) -> str:
    return f"studies:{study.slug}"


def _pilot_key(request: HttpRequest, study: Study) -> str:
    """The pilot link's key if this request carries the study's own (?pilot=KEY, or the consent form's), else ""."""
    key = (request.POST if request.method == "POST" else request.GET).get("pilot", "")
    return key if key and hmac.compare_digest(key, selectors.study_pilot_key(study=study)) else ""


def _can_enter(study: Study, pilot: bool) -> bool:
    """Open studies take anyone; pilots (staff, or the pilot link) may also try a draft."""
    return study.status == Study.Status.OPEN or (study.status == Study.Status.DRAFT and pilot)


@participant_view
@require_http_methods(["GET", "HEAD", "POST"])
def entry(request: HttpRequest, slug: str) -> HttpResponse:
    """The study's link: resume a returning participant, or show the consent form (MTurk preview: read only)."""
    study = get_object_or_404(Study, slug=slug)
    try:
        ids = services.ExternalIds.from_query(request.POST if request.method == "POST" else request.GET)
    except UserInputError as error:
        return HttpResponseBadRequest(f"{error}\n", content_type="text/plain")
    participant = services.participant_find(
        study=study, ids=ids, session_code=request.session.get(_session_key(study))
    )
    if participant is not None:
        return redirect("studies:page", slug=study.slug, code=participant.code)
    pilot_key = _pilot_key(request, study)
    # Staff are never recruits: whatever they try is a pilot, left out of counts, caps and analyses.
    is_pilot = bool(pilot_key) or request.user.is_staff
    if not _can_enter(study, is_pilot):
        return render(request, "studies/closed.html", {"study": study})
    if ids.preview:
        consent_text = selectors.study_consent_text(study=study)
        return render(request, "studies/preview.html", {"study": study, "consent_text": consent_text})
    # Checked before showing the consent form, so nobody reads it for a study they cannot join; a consent post
    # is checked by the service under a lock (this count alone would let simultaneous consents through). A
    # study stopped by its preregistered rule is full too (those in progress finish).
    if (
        request.method != "POST"
        and not is_pilot
        and (study.stopped_at or selectors.study_is_full(study=study))
    ):
        return _full(request, study, ids)
    form = ConsentForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        viewport, is_touch = form.device()
        try:
            participant = services.participant_start(
                study=study,
                ids=ids,
                consent_given=form.cleaned_data["decision"] == "agree",
                entry_nonce=form.cleaned_data["entry"],
                user_agent=request.headers.get("User-Agent", ""),
                is_pilot=is_pilot,
                viewport=viewport,
                is_touch=is_touch,
            )
        except (services.StudyFull, services.StudyStopped):  # filled or stopped while they read the form
            return _full(request, study, ids)
        request.session[_session_key(study)] = participant.code
        return redirect("studies:page", slug=study.slug, code=participant.code)
    carry = {
        **ids.as_query(),
        "entry": secrets.token_urlsafe(16),
        **({"pilot": pilot_key} if pilot_key else {}),
    }
    consent_text = selectors.study_consent_text(study=study)
    return render(
        request,
        "studies/consent.html",
        {"study": study, "form": form, "carry": carry, "consent_text": consent_text},
    )


def _completion_page(
    request: HttpRequest, template: str, completion: selectors.Completion, context: dict
) -> HttpResponse:
    """Send the participant to the outcome's redirect (Prolific), or show its page with the code (if any)."""
    if completion.redirect_url:
        return redirect(completion.redirect_url)
    return render(request, template, {**context, "completion": completion})


def _full(request: HttpRequest, study: Study, ids: services.ExternalIds) -> HttpResponse:
    """The polite "this study is full" page (or the "full" redirect); MTurk workers can submit its code."""
    completion = selectors.study_completion(study=study, outcome="full")
    mturk = {"turk_submit_to": ids.turk_submit_to, "assignment_id": ids.session_id}
    return _completion_page(request, "studies/full.html", completion, {"study": study, **mturk})


def _question_context(participant: Participant, page: services.Page, media_url: Callable[[str], str]) -> dict:
    """What a trial page shows: two images by opaque token (`media_url` gives its URL), references, the
    question, the answer buttons."""

    def url(kind: str, ident: str | int) -> str:
        return media_url(selectors.media_token(participant=participant, kind=kind, ident=ident))

    shown = participant.shown(page.trial)
    show_references = page.question.show_references if page.question else False
    return {
        "left_src": url("image", shown.left_image_id),
        "right_src": url("image", shown.right_image_id),
        "references": [url("reference", ref) for ref in page.trial.prompt.reference_images]
        if show_references
        else [],
        "question_text": page.question.text if page.question else page.trial.instruction,
        "extra_choices": [(choice, CHOICE_LABELS[choice]) for choice in page.choices[2:]],
    }


@participant_view
@require_http_methods(["GET", "HEAD", "POST"])
def participant_page(request: HttpRequest, slug: str, code: str) -> HttpResponse:
    """The participant's current page; every POST names its page (`step`) and stale ones only redirect."""
    participant = get_object_or_404(Participant.objects.select_related("study"), study__slug=slug, code=code)
    study = participant.study
    mturk = {"turk_submit_to": participant.turk_submit_to, "assignment_id": participant.external_session_id}
    if participant.consent == Participant.Consent.DECLINED:
        completion = selectors.participant_completion(participant=participant)
        return _completion_page(request, "studies/declined.html", completion, {"study": study, **mturk})
    if participant.finished_at is None and not _can_enter(study, participant.is_pilot):
        return render(request, "studies/closed.html", {"study": study})
    pages = services.participant_pages(participant=participant)
    page = pages[participant.position]
    context = {"study": study, "participant": participant, "step": participant.position}
    if request.method == "POST":
        return _page_post(request, participant, page, context)

    # This browser resumes them (a write only once). One with a Prolific/MTurk id is found by that id, and its
    # consent already wrote the session: reading the session on each of their pages would cost a query.
    if not participant.external_id and request.session.get(_session_key(study)) != participant.code:
        request.session[_session_key(study)] = participant.code
    if page.kind == "done":
        completion = selectors.participant_completion(participant=participant)
        return _completion_page(request, "studies/done.html", completion, {**context, **mturk})
    if page.kind == "instructions":
        return render(request, "studies/instructions.html", context)
    if page.kind == "feedback":
        return render(request, "studies/feedback.html", {**context, "form": FeedbackForm()})
    services.participant_page_shown(participant=participant)
    total = len(pages) - 3
    context.update(
        number=page.number,
        total=total,
        invalid="invalid" in request.GET,
        **_question_context(
            participant,
            page,
            lambda token: reverse("studies:media", args=[study.slug, participant.code, token]),
        ),
    )
    return render(request, "studies/trial.html", context)


def _page_post(
    request: HttpRequest, participant: Participant, page: services.Page, context: dict
) -> HttpResponse:
    """Hand the post to the service for the current page's kind (each checks `step` again under a lock)."""
    try:
        step = int(request.POST.get("step", ""))
    except ValueError:
        step = -1
    try:
        if page.kind == "instructions":
            services.participant_instructions_read(participant=participant, step=step)
        elif page.kind == "question":
            services.response_record(
                participant=participant,
                step=step,
                choice=request.POST.get("choice", ""),
                client_ms=_post_int(request, "client_ms"),
            )
        elif page.kind == "feedback":
            form = FeedbackForm(request.POST)
            if not form.is_valid():
                # Show the text back with the error: nothing is finished, nothing is lost.
                return render(request, "studies/feedback.html", {**context, "form": form})
            services.participant_finish(
                participant=participant, step=step, feedback=form.cleaned_data["feedback"]
            )
    except UserInputError:
        # Only a forged post gets here (the page offers valid answers only). The page says so; a flash
        # message would need a cookie, which a cross-site frame does not send.
        return redirect(
            reverse("studies:page", args=[participant.study.slug, participant.code]) + "?invalid=1"
        )
    return redirect("studies:page", slug=participant.study.slug, code=participant.code)


@require_safe
def media(request: HttpRequest, slug: str, code: str, token: str) -> HttpResponse:
    """Send a stimulus as a PNG of pixels only: no file name, text chunks or EXIF."""
    participant = get_object_or_404(Participant.objects.select_related("study"), study__slug=slug, code=code)
    return _media_response(request, participant, token)


def _media_response(request: HttpRequest, participant: Participant, token: str) -> HttpResponse:
    source = selectors.media_source(participant=participant, token=token)
    # A token names one immutable file for one participant: it is the image's ETag, so a browser that has
    # the image gets a 304 without the file being read.
    etag = f'"{token}"'
    response = get_conditional_response(request, etag=etag)
    if response is None:
        try:
            # Stored stimuli are clean already (returned as they are); level 1 keeps re-encoding others fast.
            data = png_clean(selectors.media_read(source=source), compress_level=1)
        except (OSError, UserInputError) as error:
            # A file lost after the study opened (study_stimuli_check passed): the researcher needs to know.
            logger.error("study %s: stimulus %s cannot be served: %s", participant.study.slug, source, error)
            raise Http404("no such image") from None
        response = HttpResponse(data, content_type="image/png")
    response["ETag"] = etag
    response["Cache-Control"] = "private, max-age=3600"
    return response


PREVIEW_OUTCOMES = {
    "failed_attention": "studies/done.html",
    "declined": "studies/declined.html",
    "full": "studies/full.html",
}


@staff_member_required
@require_http_methods(["GET", "HEAD", "POST"])
def preview(request: HttpRequest, slug: str) -> HttpResponse:
    """Staff walk every page of a draft or open study as a participant drawn from ?seed=N; nothing is recorded.

    ?page=N shows page N (0 = consent); a post on any page goes to the next. ?outcome=full|declined|
    failed_attention shows that outcome's page as participants will see it (code or redirect target).
    """
    study = get_object_or_404(Study, slug=slug)
    seed = max(_query_int(request, "seed", 0), 0)
    participant = services.participant_preview(study=study, seed=seed)
    pages = [services.Page("consent"), *services.participant_pages(participant=participant)]
    index = min(max(_query_int(request, "page", 0), 0), len(pages) - 1)

    def link(number: int) -> str:
        return f"{reverse('studies:preview', args=[study.slug])}?seed={seed}&page={number}"

    if request.method == "POST":
        return redirect(link(min(index + 1, len(pages) - 1)))
    banner = {
        "number": index + 1,
        "count": len(pages),
        "previous": link(index - 1) if index else "",
        "next": link(index + 1) if index + 1 < len(pages) else "",
        "outcomes": [
            (outcome, f"{reverse('studies:preview', args=[study.slug])}?outcome={outcome}")
            for outcome in PREVIEW_OUTCOMES
        ],
    }
    context = {
        "study": study,
        "participant": participant,
        "step": index,
        "preview": banner,
        "consent_text": selectors.study_consent_text(study=study),
    }
    outcome = request.GET.get("outcome", "")
    if outcome in PREVIEW_OUTCOMES:
        completion = selectors.study_completion(study=study, outcome=outcome)
        return render(request, PREVIEW_OUTCOMES[outcome], {**context, "completion": completion})
    page = pages[index]
    if page.kind == "consent":
        return render(request, "studies/consent.html", {**context, "form": ConsentForm(), "carry": {}})
    if page.kind == "instructions":
        return render(request, "studies/instructions.html", context)
    if page.kind == "feedback":
        return render(request, "studies/feedback.html", {**context, "form": FeedbackForm()})
    if page.kind == "done":
        completion = selectors.study_completion(study=study, outcome="finished")
        return render(request, "studies/done.html", {**context, "completion": completion})
    context.update(
        number=page.number,
        total=len(pages) - 4,
        **_question_context(
            participant, page, lambda token: reverse("studies:preview_media", args=[study.slug, seed, token])
        ),
    )
    return render(request, "studies/trial.html", context)


@staff_member_required
@require_safe
def preview_media(request: HttpRequest, slug: str, seed: int, token: str) -> HttpResponse:
    """A stimulus of the preview participant drawn from `seed` (staff only)."""
    study = get_object_or_404(Study, slug=slug)
    return _media_response(request, services.participant_preview(study=study, seed=seed), token)


def _post_int(request: HttpRequest, name: str) -> int | None:
    try:
        return int(request.POST.get(name, ""))
    except ValueError:
        return None


def _query_int(request: HttpRequest, name: str, default: int) -> int:
    try:
        return int(request.GET.get(name, default))
    except ValueError:
        return default


def _stopping_rule(study: Study) -> dict:
    """The study's preregistered stopping rule (None if it has none), or what is wrong with the plan's rule."""
    try:
        return {"stopping": StoppingRule.from_study(study)}
    except UserInputError as error:
        return {"stopping": None, "stopping_error": str(error)}


@staff_member_required
def dashboard(request: HttpRequest, slug: str) -> HttpResponse:
    """Staff overview: status, participants, median time, responses per trial, links."""
    study = get_object_or_404(Study, slug=slug)
    entry_url = request.build_absolute_uri(reverse("studies:entry", args=[study.slug]))
    context = {
        "study": study,
        "stats": selectors.study_stats(study=study),
        **_stopping_rule(study),
        "audit": selectors.study_randomisation_audit(study=study),
        "entry_url": entry_url,
        "pilot_url": f"{entry_url}?pilot={selectors.study_pilot_key(study=study)}",
        "expected_minutes": selectors.study_expected_minutes(study=study),
        "feedback": selectors.study_feedback(study=study),
        "completions": [
            selectors.study_completion(study=study, outcome=outcome)
            for outcome in selectors.COMPLETION_OUTCOMES
        ],
    }
    return render(request, "studies/dashboard.html", context)
