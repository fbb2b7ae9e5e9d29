"""Analysis's reads: a study's responses as a frame, and its report."""

import pandas as pd

from analysis.stats import RESPONSE_COLUMNS, AnalysisConfig, StudyReport, analyze_responses
from studies.models import Study
from studies.selectors import study_response_rows


def study_responses_frame(*, study: Study) -> pd.DataFrame:
    """One row per response of the study (the columns of analysis.stats.RESPONSE_COLUMNS)."""
    return pd.DataFrame(study_response_rows(study=study), columns=list(RESPONSE_COLUMNS))


def study_report(*, study: Study, config: AnalysisConfig | None = None) -> StudyReport:
    """The full statistical report of the study's responses."""
    return analyze_responses(study_responses_frame(study=study), config)
