"""Analysis's reads: a study's responses as a frame, and its report."""

from dataclasses import replace

import pandas as pd
from django.core.cache import cache
from django.db.models import Count, Max

from analysis.stats import RESPONSE_COLUMNS, AnalysisConfig, StudyReport, analyze_responses
from studies.models import Participant, Response, Study
from studies.selectors import study_response_rows
from studies.stopping import StoppingRule


def study_responses_frame(*, study: Study) -> pd.DataFrame:
    """One row per response (the columns of analysis.stats.RESPONSE_COLUMNS) and when its participant finished.

    `participant_finished_at` orders participants for the anytime-valid results (empty while in progress).
    """
    frame = pd.DataFrame(study_response_rows(study=study), columns=list(RESPONSE_COLUMNS))
    finished = {
        participant.label: participant.finished_at.isoformat() if participant.finished_at else None
        for participant in Participant.objects.filter(study=study).only("pk", "finished_at")
    }
    return frame.assign(participant_finished_at=frame["participant"].map(finished))


def study_analysis_config(*, study: Study, config: AnalysisConfig | None = None) -> AnalysisConfig:
    """The config, with the anytime-valid level taken from the study's preregistered stopping rule if it has one."""
    config = config or AnalysisConfig()
    rule = StoppingRule.from_study(study)
    if rule is not None and config.anytime_alpha is None:
        config = replace(config, anytime_alpha=rule.alpha)
    return config


def study_report(*, study: Study, config: AnalysisConfig | None = None) -> StudyReport:
    """The full statistical report of the study's responses."""
    return analyze_responses(
        study_responses_frame(study=study), study_analysis_config(study=study, config=config)
    )


def study_report_cached(*, study: Study) -> StudyReport:
    """The default report, cached until a response is added or removed or a participant finishes."""
    state = Response.objects.filter(participant__study=study).aggregate(count=Count("id"), last=Max("id"))
    finished = Participant.objects.filter(study=study, finished_at__isnull=False).count()
    # v3: the report gained its anytime-valid results; a report cached by older code must not be reused.
    key = f"analysis:report:v3:{study.pk}:{state['count']}:{state['last']}:{finished}"
    report = cache.get(key)
    if report is None:
        report = study_report(study=study)
        cache.set(key, report, timeout=600)
    return report
