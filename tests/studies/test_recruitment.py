"""Recruitment caps and completion codes per outcome: who may start, and what each participant is given."""

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
from django.core.management import CommandError, call_command
from django.db import connection, connections

from peftlab.errors import UserInputError
from studies.models import Participant, Study
from studies.selectors import study_completion
from studies.services import ExternalIds, StudyFull, completion_codes_parse, participant_start

from .conftest import Bot, choose_attentively

PROLIFIC = "https://app.prolific.com/submissions/complete"


def capped(study: Study, cap: int, **codes) -> Study:
    study.max_participants = cap
    study.completion_codes = codes
    study.save()
    return study


@pytest.mark.django_db
def test_the_cap_counts_those_in_progress_and_later_arrivals_see_the_full_page(study):
    capped(study, 2, full={"code": "FULL01"})
    finished, declined, in_progress = Bot(study), Bot(study), Bot(study)
    finished.consent()
    finished.finish(choose_attentively)
    declined.consent("decline")  # declining admits nobody, so it never counts
    in_progress.consent()  # still on the instructions: holds a place
    late = Bot(study, "PROLIFIC_PID=late")
    page = late.client.get(late.entry)
    assert page.status_code == 200 and b"This study is full" in page.content and b"FULL01" in page.content
    assert b'name="decision"' not in page.content  # no consent form for a study one cannot join
    assert Participant.objects.filter(study=study, consent="given").count() == 2
    # A participant already in resumes, full or not.
    assert finished.client.get(finished.entry).status_code == 302


@pytest.mark.django_db
def test_a_consent_posted_after_the_study_filled_is_refused_with_the_full_redirect(study):
    study.completion_redirect_url = PROLIFIC
    capped(study, 1, full={"code": "FULL01"})
    waiting = Bot(study, "PROLIFIC_PID=second")
    form = waiting.consent_form()  # the form was shown while a place was free
    Bot(study, "PROLIFIC_PID=first").consent()
    response = waiting.client.post(waiting.entry, {**form, "decision": "agree"})
    assert response.status_code == 302 and response["Location"] == f"{PROLIFIC}?cc=FULL01"
    assert not Participant.objects.filter(external_id="second").exists()


@pytest.mark.django_db
def test_the_service_refuses_past_the_cap_but_records_declines_and_returns_the_same_person(study):
    capped(study, 1)
    first = participant_start(study=study, ids=ExternalIds("p1", "prolific"), consent_given=True)
    with pytest.raises(StudyFull):
        participant_start(study=study, ids=ExternalIds("p2", "prolific"), consent_given=True)
    assert participant_start(study=study, ids=ExternalIds("p1", "prolific"), consent_given=True) == first
    declined = participant_start(study=study, ids=ExternalIds("p3", "prolific"), consent_given=False)
    assert declined.consent == "declined"
    study.max_participants = None
    study.save()
    participant_start(study=study, ids=ExternalIds("p2", "prolific"), consent_given=True)


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_simultaneous_consents_never_admit_more_than_the_cap(study):
    if connection.vendor != "postgresql":
        pytest.skip("set DATABASE_URL to PostgreSQL (as .ci/run does) to test concurrent admissions")
    cap, arrivals = 3, 12
    capped(study, cap)
    barrier = threading.Barrier(arrivals)

    def enter(number: int) -> bool:
        try:
            barrier.wait()
            participant_start(study=study, ids=ExternalIds(f"w{number}", "prolific"), consent_given=True)
            return True
        except StudyFull:
            return False
        finally:
            connections.close_all()

    for _ in range(3):  # three waves, each racing for the places left
        barrier.reset()
        with ThreadPoolExecutor(arrivals) as pool:
            list(pool.map(enter, range(arrivals)))
        assert Participant.objects.filter(study=study).count() == cap
        cap += 2
        study.max_participants = cap
        study.save()


@pytest.mark.django_db
def test_each_outcome_gets_its_own_code_or_redirect(study):
    study.completion_redirect_url = f"{PROLIFIC}?cc=OLD"
    capped(
        study,
        None,
        failed_attention={"code": "NOPAY1"},
        declined={"code": "NOCONS", "redirect_url": "https://example.org/bye"},
    )
    attentive, careless = Bot(study, "PROLIFIC_PID=a"), Bot(study, "PROLIFIC_PID=b")
    for bot, choose in ((attentive, choose_attentively), (careless, lambda html: "right")):
        bot.consent()
        bot.finish(choose)
    # The attentive one gets the study's code; who failed an attention check gets the other code.
    assert attentive.client.get(attentive.url)["Location"] == f"{PROLIFIC}?cc={study.completion_code}"
    assert careless.client.get(careless.url)["Location"] == f"{PROLIFIC}?cc=NOPAY1"
    declining = Bot(study, "PROLIFIC_PID=c")
    declining.consent("decline")
    assert declining.client.get(declining.url)["Location"] == "https://example.org/bye?cc=NOCONS"


@pytest.mark.django_db
def test_codes_without_redirects_are_shown_and_handed_to_mturk(study):
    capped(study, None, finished={"code": "DONE42"}, failed_attention={"code": "NOPAY1"})
    query = "workerId=W1&assignmentId=A1&hitId=H1&turkSubmitTo=https://workersandbox.mturk.com"
    worker = Bot(study, query)
    worker.consent()
    worker.finish(lambda html: "right")  # fails the check on the left
    done = worker.client.get(worker.url).content.decode()
    assert 'id="completion-code">NOPAY1<' in done and "DONE42" not in done
    assert 'action="https://workersandbox.mturk.com/mturk/externalSubmit"' in done
    assert 'name="completion_code" value="NOPAY1"' in done and 'name="assignmentId" value="A1"' in done


@pytest.mark.django_db
def test_unset_outcomes_fall_back_sensibly(study):
    study.completion_redirect_url = PROLIFIC
    assert study_completion(study=study, outcome="finished").code == study.completion_code
    # Failing attention but finishing: paid as finished unless the researcher set a code of its own.
    assert study_completion(study=study, outcome="failed_attention").code == study.completion_code
    # Declined and full send nobody anywhere without a code: the page asks them to return the task.
    assert study_completion(study=study, outcome="declined").redirect_url == ""
    assert study_completion(study=study, outcome="full").code == ""


def test_completion_options_are_checked_in_one_line():
    assert completion_codes_parse(codes=["full=F1", "declined=D-1"], redirects=["full=https://x.org/f"]) == {
        "full": {"code": "F1", "redirect_url": "https://x.org/f"},
        "declined": {"code": "D-1"},
    }
    for codes, redirects, message in [
        (["finish=X"], [], "unknown outcome 'finish'"),
        (["full"], [], "is not OUTCOME=VALUE"),
        (["full=a b"], [], "use up to 50 letters"),
        (["full=" + "A" * 51], [], "use up to 50 letters"),
        ([], ["full=javascript:alert(1)"], r"not an http\(s\) URL"),
        (["full="], [], "needs a code, a redirect URL or both"),
    ]:
        with pytest.raises(UserInputError, match=message):
            completion_codes_parse(codes=codes, redirects=redirects)


@pytest.mark.django_db
def test_create_study_sets_the_cap_and_codes(run, capsys):
    call_command(
        "create_study", "--from-generation", str(run.pk), "--slug", "capped", "--max-participants", "30",
        "--completion-code", "full=FULL01", "--completion-code", "failed_attention=NOPAY1",
        "--completion-redirect-url", PROLIFIC,
    )  # fmt: skip
    study = Study.objects.get(slug="capped")
    assert study.max_participants == 30
    assert study.completion_codes == {"full": {"code": "FULL01"}, "failed_attention": {"code": "NOPAY1"}}
    out = capsys.readouterr().out
    assert "at most 30" in out and f"{PROLIFIC}?cc=FULL01" in out
    for bad, message in [(["--max-participants", "0"], "must be 1 or more"), (["--completion-code", "x=1"], "x")]:
        with pytest.raises(CommandError, match=message):
            call_command("create_study", "--from-generation", str(run.pk), "--slug", "bad", *bad)
    assert not Study.objects.filter(slug="bad").exists()
