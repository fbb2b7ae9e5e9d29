"""Signals the studies send upward (the layers above may listen; studies import none of them)."""

from django.dispatch import Signal

# Sent once a participant's finish has been committed: kwargs `participant` (a studies.models.Participant).
# analysis.stopping listens to apply a study's preregistered stopping rule.
participant_finished = Signal()
