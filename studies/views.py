"""Studies' pages: participants enter, consent, answer one page per trial x question, and finish.

The participant path imports nothing heavy (no torch, diffusers, pandas or matplotlib): a web worker that
only serves participants stays small and starts fast.
"""

import secrets

from django.contrib import messages
from django.contrib.admin.views.decorators import staff_member_required
from django.http import HttpRequest, HttpResponse, HttpResponseBadRequest
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils.cache import get_conditional_response
from django.views.decorators.http import require_http_methods, require_safe

from generation.pngs import png_clean
from peftlab.errors import UserInputError
from studies import selectors, services
from studies.forms import ConsentForm, FeedbackForm
from studies.models import Participant, Study
from studies.stopping import StoppingRule

CHOICE_LABELS = {"left": "Left image", "right": "Right image", "both": "Both equally", "neither": "Neither"}


def _session_key(study: Study) -> str:
    return f"studies:{study.slug}"


def _can_enter(request: HttpRequest, study: Study) -> bool:
    """Open studies take anyone; staff may also pilot a draft."""
    return study.status == Study.Status.OPEN or (study.status == Study.Status.DRAFT and request.user.is_staff)


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
    if not _can_enter(request, study):
        return render(request, "studies/closed.html", {"study": study})
    if study.stopped_at:
        return render(request, "studies/stopped.html", {"study": study})
    if ids.preview:
        return render(request, "studies/preview.html", {"study": study})
    form = ConsentForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            participant = services.participant_start(
                study=study,
                ids=ids,
                consent_given=form.cleaned_data["decision"] == "agree",
                entry_nonce=form.cleaned_data["entry"],
                user_agent=request.headers.get("User-Agent", ""),
            )
        except services.StudyStopped:  # stopped while this person read the consent form
            return render(request, "studies/stopped.html", {"study": study})
        request.session[_session_key(study)] = participant.code
        return redirect("studies:page", slug=study.slug, code=participant.code)
    carry = {**ids.as_query(), "entry": secrets.token_urlsafe(16)}
    return render(request, "studies/consent.html", {"study": study, "form": form, "carry": carry})


def _question_context(participant: Participant, page: services.Page) -> dict:
    """What a trial page shows: two images by opaque token, references, the question, the answer buttons."""

    def url(kind: str, ident: str | int) -> str:
        token = selectors.media_token(participant=participant, kind=kind, ident=ident)
        return reverse("studies:media", args=[participant.study.slug, participant.code, token])

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


@require_http_methods(["GET", "HEAD", "POST"])
def participant_page(request: HttpRequest, slug: str, code: str) -> HttpResponse:
    """The participant's current page; every POST names its page (`step`) and stale ones only redirect."""
    participant = get_object_or_404(Participant.objects.select_related("study"), study__slug=slug, code=code)
    study = participant.study
    if participant.consent == Participant.Consent.DECLINED:
        return render(request, "studies/declined.html", {"study": study})
    if participant.finished_at is None and not _can_enter(request, study):
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
        if study.completion_redirect_url:
            return redirect(services.completion_url(study=study))
        return render(request, "studies/done.html", context)
    if page.kind == "instructions":
        return render(request, "studies/instructions.html", context)
    if page.kind == "feedback":
        return render(request, "studies/feedback.html", {**context, "form": FeedbackForm()})
    services.participant_page_shown(participant=participant)
    total = len(pages) - 3
    context.update(number=page.number, total=total, **_question_context(participant, page))
    return render(request, "studies/trial.html", context)


def _page_post(request: HttpRequest, participant: Participant, page: services.Page, context: dict) -> HttpResponse:
    """Hand the post to the service for the current page's kind (each checks `step` again under a lock)."""
    try:
        step = int(request.POST.get("step", ""))
    except ValueError:
        step = -1
    try:
        if page.kind == "instructions":
            services.participant_instructions_read(participant=participant, step=step)
        elif page.kind == "question":
            services.response_record(participant=participant, step=step, choice=request.POST.get("choice", ""))
        elif page.kind == "feedback":
            form = FeedbackForm(request.POST)
            if not form.is_valid():
                # Show the text back with the error: nothing is finished, nothing is lost.
                return render(request, "studies/feedback.html", {**context, "form": form})
            services.participant_finish(participant=participant, step=step, feedback=form.cleaned_data["feedback"])
    except UserInputError as error:
        messages.error(request, f"Please answer the question: {error}")
    return redirect("studies:page", slug=participant.study.slug, code=participant.code)


@require_safe
def media(request: HttpRequest, slug: str, code: str, token: str) -> HttpResponse:
    """Send a stimulus as a PNG of pixels only: no file name, text chunks or EXIF."""
    participant = get_object_or_404(Participant.objects.select_related("study"), study__slug=slug, code=code)
    source = selectors.media_source(participant=participant, token=token)
    # A token names one immutable file for one participant: it is the image's ETag, so a browser that has
    # the image gets a 304 without the file being read.
    etag = f'"{token}"'
    response = get_conditional_response(request, etag=etag)
    if response is None:
        # Stored stimuli are clean already (returned as they are); level 1 keeps re-encoding any other one fast.
        data = png_clean(selectors.media_read(source=source), compress_level=1)
        response = HttpResponse(data, content_type="image/png")
    response["ETag"] = etag
    response["Cache-Control"] = "private, max-age=3600"
    return response


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
    context = {
        "study": study,
        "stats": selectors.study_stats(study=study),
        **_stopping_rule(study),
        "entry_url": request.build_absolute_uri(reverse("studies:entry", args=[study.slug])),
    }
    return render(request, "studies/dashboard.html", context)
