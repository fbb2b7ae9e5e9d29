"""Analysis's reads: a study's responses as a frame, and its report."""

from dataclasses import replace

import pandas as pd
from django.core.cache import cache
from django.db.models import Count, Max

from analysis.stats import RESPONSE_COLUMNS, AnalysisConfig, StudyReport, analyze_responses
from analysis.stats.display import DisplayNames
from analysis.stats.paragraphs import PlanStatus, StudyDesign
from studies.models import Participant, Response, Study
from studies.selectors import study_response_rows
from studies.stopping import StoppingRule


def study_responses_frame(*, study: Study, include_pilot: bool = False) -> pd.DataFrame:
    """One row per response (the columns of analysis.stats.RESPONSE_COLUMNS) and when its participant finished.

    Pilots only when asked. `participant_finished_at` orders participants for the anytime-valid results
    (empty while in progress).
    """
    rows = study_response_rows(study=study, include_pilot=include_pilot)
    frame = pd.DataFrame(rows, columns=list(RESPONSE_COLUMNS))
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


def study_report(
    *, study: Study, config: AnalysisConfig | None = None, include_pilot: bool = False
) -> StudyReport:
    """The full statistical report of the study's responses (pilots left out unless include_pilot)."""
    return analyze_responses(
        study_responses_frame(study=study, include_pilot=include_pilot),
        study_analysis_config(study=study, config=config),
    )


def study_report_cached(*, study: Study) -> StudyReport:
    """The default report, cached until a response is added or removed or a participant finishes."""
    state = Response.objects.filter(participant__study=study, participant__is_pilot=False).aggregate(
        count=Count("id"), last=Max("id")
    )
    finished = Participant.objects.filter(study=study, finished_at__isnull=False, is_pilot=False).count()
    # v3: the report gained its anytime-valid results; a report cached by older code must not be reused.
    key = f"analysis:report:v3:{study.pk}:{state['count']}:{state['last']}:{finished}"
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
