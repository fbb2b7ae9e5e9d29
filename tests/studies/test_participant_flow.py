"""A bot walks whole studies through the test client: answers stored exactly once, resumes, edge pages."""

import re

import pytest
from django.db import IntegrityError, transaction
from django.test import Client

from studies.models import Participant, Response, Study
from studies.selectors import participant_sides_count
from studies.services import participant_pages

from .conftest import Bot, choose_attentively

pytestmark = pytest.mark.django_db


def expected_answers(study: Study) -> int:
    regular = study.trials.filter(is_attention_check=False).count()
    return regular * study.questions.count() + study.trials.filter(is_attention_check=True).count()


def test_bots_complete_the_study_with_invalid_replayed_and_back_posts(study):
    for _ in range(3):
        bot = Bot(study)
        bot.consent()
        participant = Participant.objects.get(code=bot.url.rstrip("/").rsplit("/", 1)[-1])
        stale_step = None
        while True:
            html, step = bot.current()
            if not step:
                break
            if 'id="trial-form"' in html:
                # An invalid answer, a forged step from the future: nothing stored, same page again.
                assert bot.client.post(bot.url, {"step": step, "choice": "middle"}).status_code == 302
                assert bot.client.post(bot.url, {"step": int(step) + 1, "choice": "left"}).status_code == 302
                assert bot.current()[1] == step
                bot.client.post(bot.url, {"step": step, "choice": choose_attentively(html)})
                # A double submit and a post from a page left with Back: both ignored.
                bot.client.post(bot.url, {"step": step, "choice": "right"})
                if stale_step:
                    bot.client.post(bot.url, {"step": stale_step, "choice": "left"})
                stale_step = step
            else:
                bot.answer()
        participant.refresh_from_db()
        assert participant.finished_at is not None
        assert participant.responses.count() == expected_answers(study)
        assert "Thank you" in bot.pages[-1] and study.completion_code in bot.pages[-1]
        # Every answer is the first one given for its page.
        attention = participant.responses.filter(trial__is_attention_check=True)
        assert all(r.choice == r.trial.expected_choice for r in attention)
        assert not participant.responses.filter(trial__is_attention_check=False, choice="left").exists()
    assert Participant.objects.filter(study=study).count() == 3


def test_orders_differ_across_participants_and_sides_are_counterbalanced_within_one(study):
    participants = []
    for _ in range(6):
        bot = Bot(study)
        bot.consent()
        participants.append(Participant.objects.get(code=bot.url.rstrip("/").rsplit("/", 1)[-1]))
    assert len({tuple(p.trial_order) for p in participants}) > 1
    assert len({tuple(sorted(p.sides.items())) for p in participants}) > 1
    for participant in participants:
        assert sorted(participant.trial_order) == sorted(study.trials.values_list("pk", flat=True))
        assert participant.trial_order[0] not in set(
            study.trials.filter(is_attention_check=True).values_list("pk", flat=True)
        )
        for arm, counts in participant_sides_count(participant=participant).items():
            assert abs(counts["left"] - counts["right"]) <= 1, (arm, counts)


def test_a_returning_prolific_id_resumes_the_same_participant(study):
    query = "PROLIFIC_PID=pid123&STUDY_ID=s1&SESSION_ID=x1"
    first = Bot(study, query)
    first.consent()
    for _ in range(3):
        first.answer()
    # A new browser, the same Prolific id: same participant, same place.
    second = Bot(study, query, client=Client())
    response = second.client.get(second.entry)
    assert response.status_code == 302 and response["Location"] == first.url
    second.url = response["Location"]
    second.finish(choose_attentively)
    participant = Participant.objects.get(study=study)
    assert (participant.external_id, participant.external_source, participant.external_study_id) == (
        "pid123",
        "prolific",
        "s1",
    )
    assert participant.responses.count() == expected_answers(study)


def test_a_returning_browser_session_resumes(study):
    bot = Bot(study)
    bot.consent()
    bot.answer()
    bot.answer()
    response = bot.client.get(bot.entry)
    assert response.status_code == 302 and response["Location"] == bot.url
    assert Participant.objects.filter(study=study).count() == 1
    assert Participant.objects.get().position == 2


def test_mturk_preview_shows_the_task_and_records_nothing(study):
    response = Client().get(f"/studies/{study.slug}/?assignmentId=ASSIGNMENT_ID_NOT_AVAILABLE&hitId=h")
    assert response.status_code == 200
    assert b"preview" in response.content.lower() and b"<form" not in response.content
    assert not Participant.objects.exists()


def test_mturk_worker_gets_a_submit_form_to_amazon(study):
    bot = Bot(study, "workerId=W1&assignmentId=A1&hitId=H1&turkSubmitTo=https://workersandbox.mturk.com")
    bot.consent()
    bot.finish(choose_attentively)
    assert 'action="https://workersandbox.mturk.com/mturk/externalSubmit"' in bot.pages[-1]
    assert 'name="assignmentId" value="A1"' in bot.pages[-1]


def test_closed_and_draft_studies_show_a_polite_page(study):
    bot = Bot(study)
    bot.consent()
    study.status = Study.Status.CLOSED
    study.save()
    for url in (f"/studies/{study.slug}/", bot.url):
        response = Client().get(url) if url != bot.url else bot.client.get(url)
        assert response.status_code == 200 and b"This study is not open" in response.content
    study.status = Study.Status.DRAFT
    study.save()
    assert b"This study is not open" in Client().get(f"/studies/{study.slug}/").content


def test_declined_consent_ends_politely_and_stays_declined(study):
    bot = Bot(study, "PROLIFIC_PID=nope")
    bot.consent("decline")
    assert "chose not to take part" in bot.current()[0]
    assert b"chose not to take part" in bot.client.post(bot.url, {"step": 0}).content
    returning = Client().get(f"/studies/{study.slug}/?PROLIFIC_PID=nope", follow=True)
    assert b"chose not to take part" in returning.content
    participant = Participant.objects.get()
    assert (
        participant.consent == "declined" and participant.position == 0 and not participant.responses.exists()
    )


def test_completion_redirect_with_cc_only_after_everything_is_saved(study):
    study.completion_redirect_url = "https://app.prolific.com/submissions/complete?cc=OLD"
    study.save()
    bot = Bot(study, "PROLIFIC_PID=p9")
    bot.consent()
    participant = Participant.objects.get()
    pages = participant_pages(participant=participant)
    while bot.current()[1] and Participant.objects.get().position < len(pages) - 2:
        bot.answer(choose_attentively)
    # On the feedback page: not finished, no redirect yet.
    assert bot.client.get(bot.url).status_code == 200
    html, step = bot.current()
    response = bot.client.post(bot.url, {"step": step, "feedback": "nice pictures"})
    participant.refresh_from_db()
    assert participant.finished_at is not None and participant.feedback == "nice pictures"
    assert participant.responses.count() == expected_answers(study)
    done = bot.client.get(response["Location"])
    assert done.status_code == 302
    assert done["Location"] == f"https://app.prolific.com/submissions/complete?cc={study.completion_code}"


def test_the_database_refuses_a_second_answer(study):
    bot = Bot(study)
    bot.consent()
    bot.finish(choose_attentively)
    participant = Participant.objects.get()
    for response in [
        participant.responses.filter(question__isnull=False).first(),
        participant.responses.filter(question__isnull=True).first(),
    ]:
        response.pk = None
        with pytest.raises(IntegrityError), transaction.atomic():
            response.save()


def test_response_times_and_sides_are_recorded(study):
    bot = Bot(study)
    bot.consent()
    bot.finish(choose_attentively)
    participant = Participant.objects.get()
    for response in Response.objects.filter(participant=participant).select_related("trial"):
        trial = response.trial
        assert {response.left_arm, response.right_arm} == {trial.arm_a, trial.arm_b}
        assert response.left_arm == participant.sides[str(trial.pk)]
        assert (
            response.chosen_arm == {"left": response.left_arm, "right": response.right_arm}[response.choice]
        )
        assert response.shown_at <= response.answered_at and response.response_ms >= 0


def test_keyboard_script_and_accessible_labels_are_on_trial_pages(study):
    bot = Bot(study)
    bot.consent()
    bot.answer()
    html = bot.current()[0]
    assert 'alt="Image on the left"' in html and 'alt="Image on the right"' in html
    assert 'data-key="ArrowLeft"' in html and "csrfmiddlewaretoken" in html
    assert re.search(r'<button type="submit" name="choice" value="left"', html)
