"""Preregistered stopping: the study stops admitting when every headline row is decided or at its maximum."""

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
from django.contrib.auth.models import User
from django.db import connection, connections
from django.test import Client, TestCase

from analysis.stopping import study_stopping_apply
from studies.models import Participant, Study
from studies.services import ExternalIds, StudyStopped, participant_answer_all, participant_start

from .conftest import Bot, choose_attentively

RANK = {"lora": 0, "ti": 1, "base": 2}


def set_rule(study: Study, **stopping) -> Study:
    study.plan = {"stopping": {"rule": "anytime", "alpha": 0.05, **stopping}}
    study.save(update_fields=["plan"])
    return study


def prefers_lora_then_ti(participant, page) -> str:
    """Every participant ranks lora > ti > base on every question (and passes the attention checks)."""
    if page.question is None:
        return page.trial.expected_choice
    shown = participant.shown(page.trial)
    return "left" if RANK[shown.left_arm] < RANK[shown.right_arm] else "right"


def splits_evenly(participant, page) -> str:
    """Each participant picks one arm of a pair at the first landmark and the other at the second (share 1/2)."""
    if page.question is None:
        return page.trial.expected_choice
    wanted = page.trial.arm_a if page.trial.prompt.position == 0 else page.trial.arm_b
    return "left" if participant.shown(page.trial).left_arm == wanted else "right"


def arrive(study: Study, number: int, choose=None) -> Participant:
    """A participant consents and (with `choose`) answers every page; commit hooks run as in production."""
    # The test's transaction never commits: run the on-commit hooks (the stopping check) as they come.
    with TestCase.captureOnCommitCallbacks(execute=True):
        participant = participant_start(
            study=study, ids=ExternalIds(external_id=f"P{number}", source="prolific"), consent_given=True
        )
        return participant_answer_all(participant=participant, choose=choose) if choose else participant


def test_the_study_stops_once_every_headline_row_is_decided_and_admits_nobody_new(study):
    set_rule(study, min_participants=5, max_participants=100)
    for number in range(9):
        arrive(study, number, prefers_lora_then_ti)
        study.refresh_from_db()
        assert study.stopped_at is None, number
    # Every participant gives share 1 (or 0) on all 9 rows: e_t = (1.5^t + 0.5^t) / 2 on each, and with
    # equal e-values e-Holm rejects all at once when e >= 20: the tenth participant (e_9 = 19.2, e_10 = 28.8).
    arrive(study, 9, prefers_lora_then_ti)
    study.refresh_from_db()
    assert study.stopped_at is not None
    assert "every headline comparison is settled after 10 finished participants" in study.stopped_reason
    assert "decided at 10 participants" in study.stopped_reason
    with pytest.raises(StudyStopped):
        arrive(study, 10)
    # A returning participant is still let back in (their consent is found, nothing new is admitted).
    assert arrive(study, 3).finished_at is not None
    assert Participant.objects.filter(study=study).count() == 10
    # The report page of such a unanimous study (Bradley-Terry not estimable: no ranks) shows every row decided.
    staff = Client()
    staff.force_login(User.objects.create_user("r", is_staff=True))
    report = staff.get(f"/analysis/{study.slug}/")
    assert report.status_code == 200 and b'id="anytime-table"' in report.content


def test_the_rule_waits_for_min_participants_and_stops_at_the_maximum_while_those_in_progress_finish(study):
    set_rule(study, min_participants=2, max_participants=3)
    in_progress = arrive(study, 100)  # consented, still answering when the study stops
    for number in range(2):
        arrive(study, number, splits_evenly)
    study.refresh_from_db()
    assert study.stopped_at is None
    arrive(study, 2, splits_evenly)
    study.refresh_from_db()
    assert study.stopped_at is not None
    assert study.stopped_reason.startswith("reached the preregistered maximum of 3 finished participants")
    assert "undecided:" in study.stopped_reason
    assert participant_answer_all(participant=in_progress, choose=splits_evenly).finished_at is not None
    # The entry page is the polite "full" page, not a consent form.
    html = Client().get(f"/studies/{study.slug}/?PROLIFIC_PID=late").content.decode()
    assert "This study is full" in html and 'name="decision"' not in html


def test_a_futility_band_settles_rows_with_practically_no_preference(study):
    set_rule(study, min_participants=2, max_participants=100, futility=0.25)
    number = 0
    while Study.objects.get(pk=study.pk).stopped_at is None:
        arrive(study, number, splits_evenly)
        number += 1
        assert number < 60
    study.refresh_from_db()
    # Shares of exactly 1/2: the 95% sequence is [0.264, 0.736] after 10 participants, first inside 0.5 ± 0.25.
    assert number == 10
    assert "practically no preference" in study.stopped_reason and "inside 0.5 ± 0.25" in study.stopped_reason
    assert "decided at" not in study.stopped_reason


def test_admission_reads_the_stop_from_the_database_not_the_callers_copy(study):
    set_rule(study, min_participants=1, max_participants=1)
    stale = Study.objects.get(pk=study.pk)  # loaded by a request before the stop
    arrive(study, 0, splits_evenly)
    assert Study.objects.get(pk=study.pk).stopped_at is not None and stale.stopped_at is None
    with pytest.raises(StudyStopped):
        participant_start(study=stale, ids=ExternalIds(), consent_given=True, entry_nonce="n1")


def test_a_study_without_a_rule_never_stops_and_the_dashboard_says_why_and_when_it_stopped(study):
    for number in range(3):
        arrive(study, number, splits_evenly)
    assert study_stopping_apply(study=study) is False
    staff = Client()
    staff.force_login(User.objects.create_user("r", is_staff=True))
    assert "None preregistered" in staff.get(f"/studies/{study.slug}/dashboard/").content.decode()
    set_rule(study, min_participants=1, max_participants=3)
    assert study_stopping_apply(study=study) is True
    assert study_stopping_apply(study=study) is False  # already stopped: set once
    html = staff.get(f"/studies/{study.slug}/dashboard/").content.decode()
    assert "Stopped admitting participants on" in html and "preregistered maximum of 3" in html
    assert "at most 3 finished participants" in html
    # The report page shows the anytime-valid table beside the headline.
    report = staff.get(f"/analysis/{study.slug}/").content.decode()
    assert 'id="anytime-table"' in report and "Decided at (participants)" in report


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_on_postgresql_concurrent_finishes_and_arrivals_stop_once_and_admit_nobody_after(study):
    if connection.vendor != "postgresql":
        pytest.skip("set DATABASE_URL to PostgreSQL (as .ci/run does) to test concurrent arrivals")
    set_rule(study, min_participants=1, max_participants=3)
    finishing = [Bot(study, f"PROLIFIC_PID=f{number}") for number in range(4)]
    for bot in finishing:
        bot.consent()
        # Everyone answers up to the feedback page, then all finish at the same instant as newcomers arrive.
        while 'name="feedback"' not in bot.current()[0]:
            bot.answer(choose_attentively)
    arrivals = [Bot(study, f"PROLIFIC_PID=a{number}") for number in range(6)]
    forms = [bot.consent_form() for bot in arrivals]
    barrier = threading.Barrier(len(finishing) + len(arrivals))

    def finish(bot: Bot) -> None:
        try:
            barrier.wait()
            bot.answer()
        finally:
            connections.close_all()

    def consent(pair) -> bool:
        bot, form = pair
        try:
            barrier.wait()
            response = bot.client.post(bot.entry, {**form, "decision": "agree"})
            if response.status_code == 302:  # admitted; 200 is the polite "full" page
                bot.url = response["Location"]
            return response.status_code == 302
        finally:
            connections.close_all()

    with ThreadPoolExecutor(len(finishing) + len(arrivals)) as pool:
        finishes = [pool.submit(finish, bot) for bot in finishing]
        admitted = list(pool.map(consent, zip(arrivals, forms, strict=True)))
        for future in finishes:
            future.result()
    study.refresh_from_db()
    assert study.stopped_at is not None and "maximum of 3" in study.stopped_reason
    assert Participant.objects.filter(study=study, finished_at__isnull=False).count() == 4
    assert Participant.objects.filter(study=study).count() == 4 + sum(admitted)
    # Once stopped, nobody new gets in however many arrive at once; those admitted can still finish.
    with ThreadPoolExecutor(4) as pool:
        pages = list(pool.map(_late_entry, [Bot(study, f"PROLIFIC_PID=late{number}") for number in range(4)]))
    assert all("This study is full" in page for page in pages)
    assert Participant.objects.filter(study=study).count() == 4 + sum(admitted)
    for bot in [bot for bot, was_admitted in zip(arrivals, admitted, strict=True) if was_admitted]:
        bot.finish(choose_attentively)
    assert Participant.objects.filter(study=study, finished_at__isnull=True).count() == 0


def _late_entry(bot: Bot) -> str:
    try:
        return bot.client.get(bot.entry).content.decode()
    finally:
        connections.close_all()


def test_lock_plan_preregisters_a_checked_stopping_rule_and_refuses_a_bad_one(study):
    from io import StringIO

    from django.core.management import CommandError, call_command

    with pytest.raises(CommandError, match="not valid JSON"):
        call_command("lock_plan", study.slug, "--stopping", "{rule: anytime}", stdout=StringIO())
    with pytest.raises(CommandError, match="min_participants <= max_participants"):
        call_command("lock_plan", study.slug, "--stopping", '{"min_participants": 50, "max_participants": 10}', stdout=StringIO())  # fmt: skip
    assert Study.objects.get(pk=study.pk).plan is None  # nothing half-written
    call_command("lock_plan", study.slug, "--stopping", '{"rule": "anytime", "max_participants": 80}', stdout=StringIO())  # fmt: skip
    plan = Study.objects.get(pk=study.pk).plan
    assert plan["stopping"] == {
        "rule": "anytime",
        "alpha": 0.05,
        "min_participants": 10,
        "max_participants": 80,
        "futility": None,
        "adaptive": False,
    }
