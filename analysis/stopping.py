"""Applying a study's preregistered stopping rule when a participant finishes (listens to studies' signal).

analysis.receivers calls `study_stopping_apply` when a participant of a study with a rule finishes. The rule
(`studies.stopping.StoppingRule`, from `Study.plan["stopping"]`) stops admission when every headline
row is decided by the anytime-valid test (e-Holm at the rule's alpha), or settled inside the futility band,
once `min_participants` have finished; or when `max_participants` have finished. Stopping only sets
`Study.stopped_at` and `stopped_reason`: participants in progress finish, nobody new is admitted. With
`adaptive: true` and three or more arms it also sets `Study.pair_weights` after every finish
(studies.allocation draws the next participants' pairs from them).
"""

from __future__ import annotations

import itertools
from dataclasses import replace

from django.db import transaction
from django.utils import timezone

from analysis.selectors import study_analysis_config, study_responses_frame
from analysis.stats import AnalysisConfig
from analysis.stats.report import anytime_results
from analysis.stats.sequential import Anytime, allocation_weights
from studies.allocation import pair_key
from studies.models import Participant, Study
from studies.stopping import StoppingRule


def study_anytime_rows(*, study: Study, rule: StoppingRule) -> dict[tuple[str, str, str], Anytime]:
    """The study's headline rows' anytime-valid results at the rule's alpha (finished participants only)."""
    config = study_analysis_config(study=study, config=AnalysisConfig(bootstrap=0))
    return anytime_results(study_responses_frame(study=study), replace(config, anytime_alpha=rule.alpha))


def stopping_reason(*, study: Study, rule: StoppingRule, rows: dict[tuple[str, str, str], Anytime]) -> str:
    """Why the study should stop now under `rule` given its rows' results, or "" while it should go on."""
    finished = Participant.objects.filter(study=study, finished_at__isnull=False, is_pilot=False).count()
    if finished < rule.min_participants:
        return ""
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
    """Apply the study's rule now: update its pair weights if it allocates adaptively, and stop admission
    if the rule is met; True if this call stopped it."""
    rule = StoppingRule.from_study(study)
    if rule is None or study.stopped_at is not None:
        return False
    rows = study_anytime_rows(study=study, rule=rule)
    if rule.allocates(study.arms):
        pairs = sorted({tuple(sorted(pair)) for pair in itertools.combinations(study.arms, 2)})
        weights = allocation_weights(rows, pairs)
        Study.objects.filter(pk=study.pk).update(
            pair_weights={pair_key(*pair): weight for pair, weight in weights.items()}
        )
    reason = stopping_reason(study=study, rule=rule, rows=rows)
    if not reason:
        return False
    with transaction.atomic():
        # Two participants finishing at once may both find the rule met: the first update wins, once.
        return bool(
            Study.objects.filter(pk=study.pk, stopped_at__isnull=True).update(
                stopped_at=timezone.now(), stopped_reason=reason
            )
        )
