"""Analysis's staff-only pages: a study's report, its exports and its charts."""

import base64

from django.contrib import messages
from django.contrib.admin.views.decorators import staff_member_required
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_POST

from analysis.charts import CHART_FORMATS, CHARTS, render_chart
from analysis.exports import CONTENT_TYPES, EXPORT_FORMATS, export_bytes, export_frame
from analysis.reporting import report_context, report_figures
from analysis.selectors import report_subtitle, study_design, study_display_names, study_report_cached
from analysis.services import study_plan_lock
from analysis.stats.paragraphs import exclusions_line, headline_sentences
from peftlab.errors import UserInputError
from studies.models import Study
from studies.selectors import PARTICIPANT_ROW_KEYS, study_participant_rows, study_response_rows


@staff_member_required
def report(request: HttpRequest, slug: str) -> HttpResponse:
    """The study's report: the forest plot first, then Results, Methods, the headline, leaderboard and tables."""
    study = get_object_or_404(Study, slug=slug)
    result = study_report_cached(study=study)
    names = study_display_names(study=study)
    context = report_context(
        report=result,
        design=study_design(study=study),
        names=names,
        title=study.title,
        figures=report_figures(result, names, png=False),
    )
    chart_links = {
        name: {
            fmt: reverse("analysis:chart", args=[study.slug, name, fmt]) + "?download=1"
            for fmt in CHART_FORMATS
        }
        for name in CHARTS
    }
    return render(
        request,
        "analysis/report.html",
        {
            **context,
            "study": study,
            "subtitle": report_subtitle(study=study, names=names),
            "chart_links": chart_links,
            "export_formats": EXPORT_FORMATS,
        },
    )


@staff_member_required
def export(request: HttpRequest, slug: str, fmt: str) -> HttpResponse:
    """The study's responses as a download: pseudonymous, with Prolific/MTurk ids only for ?external_ids=1,
    pilots only for ?pilot=1."""
    study = get_object_or_404(Study, slug=slug)
    if fmt not in EXPORT_FORMATS:
        raise Http404("unknown format")
    rows = study_response_rows(study=study, include_pilot=request.GET.get("pilot") == "1")
    data = export_bytes(export_frame(rows, include_external_ids=request.GET.get("external_ids") == "1"), fmt)
    response = HttpResponse(data, content_type=CONTENT_TYPES[fmt])
    response["Content-Disposition"] = f'attachment; filename="{study.slug}-responses.{fmt}"'
    return response


@staff_member_required
def participants_export(request: HttpRequest, slug: str, fmt: str) -> HttpResponse:
    """One row per participant (outcome, screen, browser, feedback) as a download; ids and pilots as for export."""
    study = get_object_or_404(Study, slug=slug)
    if fmt not in EXPORT_FORMATS:
        raise Http404("unknown format")
    rows = study_participant_rows(study=study, include_pilot=request.GET.get("pilot") == "1")
    frame = export_frame(
        rows, include_external_ids=request.GET.get("external_ids") == "1", columns=PARTICIPANT_ROW_KEYS
    )
    response = HttpResponse(export_bytes(frame, fmt), content_type=CONTENT_TYPES[fmt])
    response["Content-Disposition"] = f'attachment; filename="{study.slug}-participants.{fmt}"'
    return response


@staff_member_required
def chart(request: HttpRequest, slug: str, name: str, fmt: str) -> HttpResponse:
    """One chart of the report as PNG or SVG (?download=1 to save it)."""
    study = get_object_or_404(Study, slug=slug)
    if name not in CHARTS or fmt not in CHART_FORMATS:
        raise Http404("unknown chart")
    data = render_chart(study_report_cached(study=study), name, fmt, study_display_names(study=study))
    response = HttpResponse(data, content_type="image/svg+xml" if fmt == "svg" else "image/png")
    if request.GET.get("download"):
        response["Content-Disposition"] = f'attachment; filename="{study.slug}-{name}.{fmt}"'
    return response


@staff_member_required
def headline(request: HttpRequest, slug: str) -> HttpResponse:
    """The live headline as an HTML fragment (the dashboard polls it): exclusions, forest plot, one line per row."""
    study = get_object_or_404(Study, slug=slug)
    result = study_report_cached(study=study)
    names = study_display_names(study=study)
    forest = render_chart(result, "forest", "svg", names)
    return render(
        request,
        "analysis/_headline.html",
        {
            "exclusions_line": exclusions_line(result.exclusions),
            "forest_uri": "data:image/svg+xml;base64," + base64.b64encode(forest).decode(),
            "sentences": headline_sentences(result, names),
        },
    )


@staff_member_required
@require_POST
def lock_plan(request: HttpRequest, slug: str) -> HttpResponse:
    """Lock the study's analysis plan (the button for `manage.py lock_plan`), then back to the page it was pressed on."""
    study = get_object_or_404(Study, slug=slug)
    try:
        study = study_plan_lock(study=study)
    except UserInputError as error:
        messages.error(request, str(error))
    else:
        messages.success(request, f"Analysis plan locked: sha256 {study.plan_sha256}.")
    back = request.POST.get("next", "")
    if url_has_allowed_host_and_scheme(
        back, allowed_hosts={request.get_host()}, require_https=request.is_secure()
    ):
        return redirect(back)
    return redirect("studies:dashboard", slug=study.slug)
