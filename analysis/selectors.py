"""Analysis's reads: a study's responses as a frame, and its report."""

import pandas as pd
from django.core.cache import cache
from django.db.models import Count, Max

from analysis.stats import RESPONSE_COLUMNS, AnalysisConfig, StudyReport, analyze_responses
from studies.models import Response, Study
from studies.selectors import study_response_rows


def study_responses_frame(*, study: Study, include_pilot: bool = False) -> pd.DataFrame:
    """One row per response of the study (the columns of analysis.stats.RESPONSE_COLUMNS); pilots when asked."""
    rows = study_response_rows(study=study, include_pilot=include_pilot)
    return pd.DataFrame(rows, columns=list(RESPONSE_COLUMNS))


def study_report(
    *, study: Study, config: AnalysisConfig | None = None, include_pilot: bool = False
) -> StudyReport:
    """The full statistical report of the study's responses (pilots left out unless include_pilot)."""
    return analyze_responses(study_responses_frame(study=study, include_pilot=include_pilot), config)


def study_report_cached(*, study: Study) -> StudyReport:
    """The default report, cached until a response is added or removed (the page and its charts share it)."""
    state = Response.objects.filter(participant__study=study, participant__is_pilot=False).aggregate(count=Count("id"), last=Max("id"))
    # v2: the report's layout changed (headline first); a report cached by the old code must not be reused.
    key = f"analysis:report:v2:{study.pk}:{state['count']}:{state['last']}"
    report = cache.get(key)
    if report is None:
        report = study_report(study=study)
        cache.set(key, report, timeout=600)
    return report
