"""Analysis's listeners to the studies' signals, kept light: a web worker serving participants imports this.

Only a study with a preregistered stopping rule loads analysis.stopping (and pandas with it), when one of its
participants finishes; participants of other studies never pay for it.
"""

from django.dispatch import receiver

from studies.models import Participant, Study
from studies.signals import participant_finished
from studies.stopping import StoppingRule


@receiver(participant_finished)
def _participant_finished(sender, participant: Participant, **kwargs) -> None:
    study = Study.objects.get(pk=participant.study_id)
    if study.stopped_at is not None or StoppingRule.from_study(study) is None:
        return
    from analysis.stopping import study_stopping_apply  # heavy (pandas): only for studies with a rule

    study_stopping_apply(study=study)
