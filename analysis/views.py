"""Analysis's staff-only pages: a study's report, its exports and its charts."""

from django.contrib.admin.views.decorators import staff_member_required
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, render
from django.urls import reverse

from analysis.charts import CHART_FORMATS, CHARTS, render_chart
from analysis.exports import CONTENT_TYPES, EXPORT_FORMATS, export_bytes, export_frame
from analysis.reporting import report_context, report_figures
from analysis.selectors import report_subtitle, study_design, study_display_names, study_report_cached
from studies.models import Study
from studies.selectors import study_response_rows


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
