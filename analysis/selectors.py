"""Analysis's reads: a study's responses as a frame, and its report."""

import pandas as pd
from django.core.cache import cache
from django.db.models import Count, Max

from analysis.stats import RESPONSE_COLUMNS, AnalysisConfig, StudyReport, analyze_responses
from analysis.stats.display import DisplayNames
from studies.models import Response, Study
from studies.selectors import study_response_rows


def study_responses_frame(*, study: Study) -> pd.DataFrame:
    """One row per response of the study (the columns of analysis.stats.RESPONSE_COLUMNS)."""
    return pd.DataFrame(study_response_rows(study=study), columns=list(RESPONSE_COLUMNS))


def study_report(*, study: Study, config: AnalysisConfig | None = None) -> StudyReport:
    """The full statistical report of the study's responses."""
    return analyze_responses(study_responses_frame(study=study), config)


def study_report_cached(*, study: Study) -> StudyReport:
    """The default report, cached until a response is added or removed (the page and its charts share it)."""
    state = Response.objects.filter(participant__study=study).aggregate(count=Count("id"), last=Max("id"))
    # v2: the report's layout changed (headline first); a report cached by the old code must not be reused.
    key = f"analysis:report:v2:{study.pk}:{state['count']}:{state['last']}"
    report = cache.get(key)
    if report is None:
        report = study_report(study=study)
        cache.set(key, report, timeout=600)
    return report


def study_display_names(*, study: Study) -> DisplayNames:
    """The study's arm labels and question labels (empty ones fall back to the keys)."""
    questions = {key: label for key, label in study.questions.values_list("key", "label") if label}
    return DisplayNames(arms=dict(study.arm_labels or {}), questions=questions)
