"""Studies' pages: participants enter, consent, answer one page per trial x question, and finish."""

import csv
import io

from django.contrib import messages
from django.contrib.admin.views.decorators import staff_member_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_http_methods
from PIL import Image

from peftlab.errors import UserInputError
from studies import selectors, services
from studies.forms import ConsentForm, FeedbackForm
from studies.models import Participant, Study

CHOICE_LABELS = {"left": "Left image", "right": "Right image", "both": "Both equally", "neither": "Neither"}


def _session_key(study: Study) -> str:
    return f"studies:{study.slug}"


def _can_enter(request: HttpRequest, study: Study) -> bool:
    """Open studies take anyone; staff may also pilot a draft."""
    return study.status == Study.Status.OPEN or (study.status == Study.Status.DRAFT and request.user.is_staff)


@require_http_methods(["GET", "POST"])
def entry(request: HttpRequest, slug: str) -> HttpResponse:
    """The study's link: resume a returning participant, or show the consent form (MTurk preview: read only)."""
    study = get_object_or_404(Study, slug=slug)
    ids = services.ExternalIds.from_query(request.POST if request.method == "POST" else request.GET)
    participant = services.participant_find(
        study=study, ids=ids, session_code=request.session.get(_session_key(study))
    )
    if participant is not None:
        return redirect("studies:page", slug=study.slug, code=participant.code)
    if not _can_enter(request, study):
        return render(request, "studies/closed.html", {"study": study})
    if ids.preview:
        return render(request, "studies/preview.html", {"study": study})
    form = ConsentForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        participant = services.participant_start(
            study=study,
            ids=ids,
            consent_given=form.cleaned_data["decision"] == "agree",
            user_agent=request.headers.get("User-Agent", ""),
        )
        request.session[_session_key(study)] = participant.code
        return redirect("studies:page", slug=study.slug, code=participant.code)
    return render(request, "studies/consent.html", {"study": study, "form": form, "carry": ids.as_query()})


def _question_context(participant: Participant, page: services.Page) -> dict:
    """What a trial page shows: two images by opaque token, references, the question, the answer buttons."""

    def url(kind: str, ident: str | int) -> str:
        token = selectors.media_token(participant=participant, kind=kind, ident=ident)
        return reverse("studies:media", args=[participant.study.slug, participant.code, token])

    trial = page.trial
    left_arm = participant.sides[str(trial.pk)]
    left, right = (
        (trial.image_a, trial.image_b) if left_arm == trial.arm_a else (trial.image_b, trial.image_a)
    )
    show_references = page.question.show_references if page.question else False
    return {
        "left_src": url("image", left.pk),
        "right_src": url("image", right.pk),
        "references": [url("reference", ref) for ref in trial.prompt.reference_images]
        if show_references
        else [],
        "question_text": page.question.text if page.question else trial.instruction,
        "extra_choices": [(choice, CHOICE_LABELS[choice]) for choice in page.choices[2:]],
    }


@require_http_methods(["GET", "POST"])
def participant_page(request: HttpRequest, slug: str, code: str) -> HttpResponse:
    """The participant's current page; every POST names its page (`step`) and stale ones only redirect."""
    participant = get_object_or_404(Participant.objects.select_related("study"), study__slug=slug, code=code)
    study = participant.study
    request.session[_session_key(study)] = participant.code
    if participant.consent == Participant.Consent.DECLINED:
        return render(request, "studies/declined.html", {"study": study})
    if participant.finished_at is None and not _can_enter(request, study):
        return render(request, "studies/closed.html", {"study": study})
    pages = services.participant_pages(participant=participant)
    page = pages[participant.position]

    if request.method == "POST":
        try:
            step = int(request.POST.get("step", ""))
        except ValueError:
            step = -1
        try:
            if page.kind == "instructions":
                services.participant_instructions_read(participant=participant, step=step)
            elif page.kind == "question":
                services.response_record(
                    participant=participant, step=step, choice=request.POST.get("choice", "")
                )
            elif page.kind == "feedback":
                form = FeedbackForm(request.POST)
                feedback = form.cleaned_data["feedback"] if form.is_valid() else ""
                services.participant_finish(participant=participant, step=step, feedback=feedback)
        except UserInputError as error:
            messages.error(request, f"Please answer the question: {error}")
        return redirect("studies:page", slug=slug, code=code)

    context = {"study": study, "participant": participant, "step": participant.position}
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


PIXEL_CHUNKS = {b"IHDR", b"PLTE", b"IDAT", b"IEND"}


def _pixels_only_png(data: bytes) -> bytes:
    """`data` itself if it is a PNG of pixel chunks only (as imports store them), else a re-encoded PNG."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        offset, chunks = 8, set()
        while offset + 8 <= len(data):
            chunks.add(data[offset + 4 : offset + 8])
            offset += 12 + int.from_bytes(data[offset : offset + 4], "big")
        if chunks <= PIXEL_CHUNKS:
            return data
    with Image.open(io.BytesIO(data)) as image:
        pixels = image.convert("RGBA" if "A" in image.getbands() else "RGB")
    buffer = io.BytesIO()
    # Re-encoding costs ~0.2 s per 512 px image at the default level; level 1 is several times faster.
    pixels.save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


@require_GET
def media(request: HttpRequest, slug: str, code: str, token: str) -> HttpResponse:
    """Send a stimulus as a PNG of pixels only: no file name, text chunks or EXIF."""
    participant = get_object_or_404(Participant, study__slug=slug, code=code)
    with selectors.media_open(participant=participant, token=token) as handle:
        data = handle.read()
    response = HttpResponse(_pixels_only_png(data), content_type="image/png")
    response["Cache-Control"] = "private, max-age=3600"
    return response


@staff_member_required
def dashboard(request: HttpRequest, slug: str) -> HttpResponse:
    """Staff overview: status, participants, median time, responses per trial, links."""
    study = get_object_or_404(Study, slug=slug)
    context = {
        "study": study,
        "stats": selectors.study_stats(study=study),
        "entry_url": request.build_absolute_uri(reverse("studies:entry", args=[study.slug])),
    }
    return render(request, "studies/dashboard.html", context)


@staff_member_required
def responses_csv(request: HttpRequest, slug: str) -> HttpResponse:
    """Every response as CSV (the columns of `study_response_rows`)."""
    study = get_object_or_404(Study, slug=slug)
    rows = selectors.study_response_rows(study=study)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=selectors.RESPONSE_ROW_KEYS)
    writer.writeheader()
    writer.writerows(rows)
    response = HttpResponse(buffer.getvalue(), content_type="text/csv")
    response["Content-Disposition"] = f'attachment; filename="{study.slug}-responses.csv"'
    return response
