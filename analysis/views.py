"""Analysis's staff-only pages: a study's report, its exports and its charts."""

from django.contrib.admin.views.decorators import staff_member_required
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, render
from django.utils.safestring import mark_safe

from analysis.charts import CHART_FORMATS, CHARTS, render_chart
from analysis.exports import CONTENT_TYPES, EXPORT_FORMATS, export_bytes, export_frame
from analysis.selectors import study_report_cached
from studies.models import Study
from studies.selectors import PARTICIPANT_ROW_KEYS, study_participant_rows, study_response_rows


@staff_member_required
def report(request: HttpRequest, slug: str) -> HttpResponse:
    """The study's report: the headline first, then exclusions, the other tables, the charts and downloads."""
    study = get_object_or_404(Study, slug=slug)
    result = study_report_cached(study=study)
    tables = [
        # pandas escapes the cells: the HTML is safe to insert.
        (table.title, table.note, mark_safe(table.to_html()))
        for name, table in result.tables().items()
        if name != "headline"
    ]
    return render(
        request,
        "analysis/report.html",
        {
            "study": study,
            "headline": result.headline,
            "headline_html": mark_safe(result.headline.to_html()),
            "exclusions": result.exclusions.to_dict(),
            "tables": tables,
            "charts": list(CHARTS),
            "chart_formats": CHART_FORMATS,
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
    data = render_chart(study_report_cached(study=study), name, fmt)
    response = HttpResponse(data, content_type="image/svg+xml" if fmt == "svg" else "image/png")
    if request.GET.get("download"):
        response["Content-Disposition"] = f'attachment; filename="{study.slug}-{name}.{fmt}"'
    return response
