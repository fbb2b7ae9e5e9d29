"""Analysis's reads: a study's responses as a frame, and its report."""

import pandas as pd
from django.core.cache import cache
from django.db.models import Count, Max

from analysis.stats import RESPONSE_COLUMNS, AnalysisConfig, StudyReport, analyze_responses
from analysis.stats.display import DisplayNames
from analysis.stats.paragraphs import PlanStatus, StudyDesign
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


def study_display_names(*, study: Study) -> DisplayNames:
    """The study's arm labels and question labels (empty ones fall back to the keys)."""
    questions = {key: label for key, label in study.questions.values_list("key", "label") if label}
    return DisplayNames(arms=dict(study.arm_labels or {}), questions=questions)


def study_plan_status(*, study: Study) -> PlanStatus | None:
    """The study's locked analysis plan (SHA-256, when, deviations), or None when none was locked."""
    if study.plan_locked_at is None:
        return None
    return PlanStatus(
        sha256=study.plan_sha256,
        locked_at=study.plan_locked_at.isoformat(timespec="seconds"),
        deviations=list(study.plan_deviations or []),
    )


def study_design(*, study: Study) -> StudyDesign:
    """What the study asked: its arms, questions, prompts, attention checks and locked plan."""
    trials = study.trials.all()
    return StudyDesign(
        arms=list(study.arms),
        questions=list(study.questions.values_list("key", flat=True)),
        prompts=trials.filter(is_attention_check=False).values("prompt").distinct().count(),
        attention_checks=trials.filter(is_attention_check=True).count(),
        plan=study_plan_status(study=study),
    )


def report_subtitle(*, study: Study, names: DisplayNames) -> str:
    """The line under a report's title: the study, its arms by display name, and the generation run."""
    arms = ", ".join(names.arm(arm) for arm in study.arms)
    return f"Study {study.slug} ({study.get_status_display().lower()}); arms: {arms}; stimuli: {study.generation_run}."
