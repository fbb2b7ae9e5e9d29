"""Preregistration on the studies side: a locked analysis plan guards the study's design.

The plan itself is built and locked by `analysis.services.study_plan_lock` (analysis knows the tests); here a
locked study refuses changes to its arms, questions or exclusion settings, or records them as deviations
when the researcher gives a reason (`--deviate "reason"`).
"""

from django.db import transaction
from django.utils import timezone

from peftlab.errors import UserInputError
from studies.models import Study


@transaction.atomic
def study_plan_guard(*, study: Study, change: str, deviate: str = "") -> None:
    """Allow `change` on an unlocked study; on a locked one refuse it, or record it as a deviation with a reason."""
    locked = Study.objects.select_for_update().get(pk=study.pk)
    if locked.plan_locked_at is None:
        return
    reason = deviate.strip()
    if not reason:
        raise UserInputError(
            f"study {locked.slug!r} has a locked analysis plan (sha256 {locked.plan_sha256[:12]}…): {change} "
            'would depart from it; to make the change anyway, give a reason with --deviate "reason" (in the '
            "console: the deviation reason); it is recorded and reported as a deviation."
        )
    deviation = {"at": timezone.now().isoformat(timespec="seconds"), "change": change, "reason": reason}
    locked.plan_deviations = [*locked.plan_deviations, deviation]
    locked.save(update_fields=["plan_deviations"])
    study.plan_deviations = locked.plan_deviations


@transaction.atomic
def study_plan_store(*, study: Study, plan: dict, sha256: str) -> Study:
    """Freeze `plan` (with its SHA-256) on a study that has none yet and no data; the lock time is now."""
    locked = Study.objects.select_for_update().get(pk=study.pk)
    if locked.plan_locked_at is not None:
        raise UserInputError(
            f"study {locked.slug!r} already has a locked plan (sha256 {locked.plan_sha256}, locked "
            f"{locked.plan_locked_at:%Y-%m-%d %H:%M} UTC); a plan is locked once. Export it with --output."
        )
    responses = locked.participants.filter(is_pilot=False, responses__isnull=False).distinct().count()
    if responses:
        raise UserInputError(
            f"study {locked.slug!r} already has answers from {responses} participant(s); a plan locked after "
            "the data arrive is not a preregistration. Lock the plan before opening the study."
        )
    locked.plan, locked.plan_sha256, locked.plan_locked_at = plan, sha256, timezone.now()
    locked.plan_deviations = []
    locked.save(update_fields=["plan", "plan_sha256", "plan_locked_at", "plan_deviations"])
    return locked
