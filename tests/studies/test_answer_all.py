"""participant_answer_all: the service a pilot's bots use to walk a study."""

import pytest

from studies.models import Response
from studies.services import ExternalIds, participant_answer_all, participant_start


@pytest.mark.django_db
def test_bot_answers_every_question_once_and_finishes(study):
    participant = participant_start(
        study=study, ids=ExternalIds(external_id="BOT1", source="demo"), consent_given=True
    )
    asked = []

    def choose(current, page):
        asked.append((page.trial.pk, page.question.pk if page.question else None))
        return page.trial.expected_choice if page.question is None else "right"

    finished = participant_answer_all(participant=participant, choose=choose, feedback="pilot")
    assert finished.finished_at is not None and finished.feedback == "pilot"
    responses = Response.objects.filter(participant=participant)
    assert responses.count() == len(asked) == len(set(asked))
    regular = responses.filter(trial__is_attention_check=False)
    assert regular.exists() and set(regular.values_list("choice", flat=True)) == {"right"}
