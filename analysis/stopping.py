"""Applying a study's preregistered stopping rule when a participant finishes (listens to studies' signal).

The rule (`studies.stopping.StoppingRule`, from `Study.plan["stopping"]`) stops admission when every headline
row is decided by the anytime-valid test (e-Holm at the rule's alpha), or settled inside the futility band,
once `min_participants` have finished; or when `max_participants` have finished. Stopping only sets
`Study.stopped_at` and `stopped_reason`: participants in progress finish, nobody new is admitted.
"""

from __future__ import annotations

from dataclasses import replace

from django.db import transaction
from django.dispatch import receiver
from django.utils import timezone

from analysis.selectors import study_analysis_config, study_responses_frame
from analysis.stats import AnalysisConfig
from analysis.stats.report import anytime_results
from studies.models import Participant, Study
from studies.signals import participant_finished
from studies.stopping import StoppingRule


def stopping_reason(*, study: Study, rule: StoppingRule) -> str:
    """Why the study should stop now under `rule`, or "" while it should go on."""
    finished = Participant.objects.filter(study=study, finished_at__isnull=False, is_pilot=False).count()
    if finished < rule.min_participants:
        return ""
    config = study_analysis_config(study=study, config=AnalysisConfig(bootstrap=0))
    rows = anytime_results(study_responses_frame(study=study), replace(config, anytime_alpha=rule.alpha))
    decided = {key: row for key, row in rows.items() if row.decided_at is not None}
    futile = {
        key: row
        for key, row in rows.items()
        if key not in decided
        and rule.futility is not None
        and 0.5 - rule.futility <= row.cs_low
        and row.cs_high <= 0.5 + rule.futility
    }
    names = {key: f"{key[0]} ({key[1]} vs {key[2]})" for key in rows}
    settled = "; ".join(
        [f"{names[key]} decided at {row.decided_at} participants" for key, row in decided.items()]
        + [
            f"{names[key]} shows practically no preference ([{row.cs_low:.3f}, {row.cs_high:.3f}] "
            f"inside 0.5 ± {rule.futility})"
            for key, row in futile.items()
        ]
    )
    if rows and len(decided) + len(futile) == len(rows):
        return (
            f"every headline comparison is settled after {finished} finished participants (anytime-valid "
            f"test, e-Holm at alpha {rule.alpha}): {settled}."
        )
    if finished >= rule.max_participants:
        open_rows = ", ".join(names[key] for key in rows if key not in decided and key not in futile)
        return (
            f"reached the preregistered maximum of {rule.max_participants} finished participants; "
            f"undecided: {open_rows or 'none'}" + (f"; {settled}." if settled else ".")
        )
    return ""


def study_stopping_apply(*, study: Study) -> bool:
    """Stop admission if the study's rule is met now; True if this call stopped it."""
    rule = StoppingRule.from_study(study)
    if rule is None or study.stopped_at is not None:
        return False
    reason = stopping_reason(study=study, rule=rule)
    if not reason:
        return False
    with transaction.atomic():
        # Two participants finishing at once may both find the rule met: the first update wins, once.
        return bool(
            Study.objects.filter(pk=study.pk, stopped_at__isnull=True).update(
                stopped_at=timezone.now(), stopped_reason=reason
            )
        )


@receiver(participant_finished)
def _participant_finished(sender, participant: Participant, **kwargs) -> None:
    study = Study.objects.get(pk=participant.study_id)
    if StoppingRule.from_study(study) is not None:
        study_stopping_apply(study=study)
