"""Bad input on the participant side: refused with 400/404 or a visible message, never a 500 or a silent loss."""

import re
from urllib.parse import urlencode

import pytest
from django.test import Client

from peftlab.errors import UserInputError
from studies.models import Participant
from studies.services import ExternalIds, participant_start

from .conftest import Bot, choose_attentively

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize(
    "query",
    ["PROLIFIC_PID=ab%00cd&STUDY_ID=s&SESSION_ID=x", "PROLIFIC_PID=p&STUDY_ID=s%00", "workerId=w%00&assignmentId=a&hitId=h"],
)
def test_a_nul_byte_in_a_platform_id_is_a_400(study, query):
    client = Client()
    assert client.get(f"/studies/{study.slug}/?{query}").status_code == 400
    post = dict(part.split("=") for part in query.replace("%00", "\x00").split("&"))
    assert client.post(f"/studies/{study.slug}/", {**post, "decision": "agree"}).status_code == 400
    assert not Participant.objects.exists()


def test_a_nul_byte_in_a_participant_code_or_image_token_is_a_404(study):
    bot = Bot(study)
    bot.consent()
    assert bot.client.get(bot.url.rstrip("/") + "%00/").status_code == 404
    assert bot.client.get(f"/studies/{study.slug}/p/%00/").status_code == 404
    assert bot.client.get(f"{bot.url}m/ab%00cd.png").status_code == 404


@pytest.mark.parametrize(
    "submit_to",
    [
        "https://evil.example\\@www.mturk.com",  # Chromium posts this to evil.example
        "https://evil.example\\@workersandbox.mturk.com",
        "https://user@www.mturk.com",
        "https://www.mturk.com.evil.example",
        "https://www.mturk.com:8443",
        "http://www.mturk.com",
        "//www.mturk.com",
    ],
)
def test_turk_submit_to_accepts_only_amazons_exact_origins(study, submit_to):
    ids = ExternalIds.from_query({"workerId": "W1", "assignmentId": "A1", "hitId": "H", "turkSubmitTo": submit_to})
    assert ids.turk_submit_to == ""
    bot = Bot(study, "workerId=W1&assignmentId=A1&hitId=H&" + urlencode({"turkSubmitTo": submit_to}))
    bot.consent()
    bot.finish(choose_attentively)
    assert "externalSubmit" not in bot.pages[-1] and "evil" not in bot.pages[-1]


@pytest.mark.parametrize("submit_to", ["https://www.mturk.com", "https://workersandbox.mturk.com/"])
def test_turk_submit_to_keeps_amazons_origins(submit_to):
    ids = ExternalIds.from_query({"workerId": "W1", "assignmentId": "A1", "turkSubmitTo": submit_to})
    assert ids.turk_submit_to == submit_to.rstrip("/")


def feedback_page(study) -> tuple[Bot, str]:
    """A participant on the feedback page, and its step."""
    bot = Bot(study)
    bot.consent()
    while 'name="feedback"' not in bot.current()[0]:
        bot.answer(choose_attentively)
    return bot, bot.current()[1]


def test_feedback_too_long_is_refused_visibly_and_nothing_finishes(study):
    bot, step = feedback_page(study)
    participant = Participant.objects.get()
    response = bot.client.post(bot.url, {"step": step, "feedback": "x" * 5001})
    assert response.status_code == 200
    assert re.search(r'role="alert"[^>]*>Please shorten your feedback to 5,000 characters \(it has 5,001\)', response.content.decode())
    participant.refresh_from_db()
    assert participant.finished_at is None and participant.feedback == ""
    bot.client.post(bot.url, {"step": step, "feedback": "short"})
    participant.refresh_from_db()
    assert participant.finished_at is not None and participant.feedback == "short"


def test_feedback_line_breaks_count_once_as_the_browser_counts_them(study):
    """Chromium lets 5,000 characters through counting CRLF as two; the server must keep all of them."""
    bot, step = feedback_page(study)
    text = "\r\n".join(["y" * 8] * 500)  # 4,000 letters and 499 line breaks: 4,998 as posted, 4,499 stored
    assert len(text) <= 5000
    bot.client.post(bot.url, {"step": step, "feedback": text})
    participant = Participant.objects.get()
    assert participant.finished_at is not None and participant.feedback == text.replace("\r\n", "\n")
    longer = "\r\n".join(["z" * 10] * 450)  # 5,398 characters posted, 4,949 once normalised: accepted too
    assert len(longer) > 5000 >= len(longer.replace("\r\n", "\n"))
    bot2, step2 = feedback_page(study)
    bot2.client.post(bot2.url, {"step": step2, "feedback": longer})
    assert Participant.objects.get(code=bot2.url.rstrip("/").rsplit("/", 1)[-1]).feedback == longer.replace("\r\n", "\n")


def test_a_double_posted_consent_form_makes_one_participant(study):
    client = Client()
    html = client.get(f"/studies/{study.slug}/").content.decode()
    nonce = re.search(r'name="entry" value="([^"]+)"', html).group(1)
    first = client.post(f"/studies/{study.slug}/", {"decision": "agree", "entry": nonce})
    # The second post of a double click arrives before the first's session cookie: a fresh client.
    second = Client().post(f"/studies/{study.slug}/", {"decision": "agree", "entry": nonce})
    assert first["Location"] == second["Location"] and Participant.objects.count() == 1
    other = Client().get(f"/studies/{study.slug}/").content.decode()
    assert re.search(r'name="entry" value="([^"]+)"', other).group(1) != nonce  # one value per form shown


def test_a_consent_post_without_its_form_value_starts_nobody(study):
    response = Client().post(f"/studies/{study.slug}/", {"decision": "agree"})
    assert response.status_code == 200 and not Participant.objects.exists()


def test_head_requests_answer_like_get(study):
    bot = Bot(study)
    assert bot.client.head(f"/studies/{study.slug}/").status_code == 200
    bot.consent()
    bot.answer()
    assert bot.client.head(bot.url).status_code == 200
    src = re.search(r'<img src="([^"]+)"', bot.current()[0]).group(1)
    head = bot.client.head(src)
    assert head.status_code == 200 and head["Content-Type"] == "image/png" and head.content == b""


def test_participant_sources_are_the_models_choices(study):
    with pytest.raises(UserInputError, match="unknown participant source 'bogus'"):
        ExternalIds(external_id="x", source="bogus")
    demo = participant_start(
        study=study, ids=ExternalIds(external_id="BOT", source=Participant.Source.DEMO), consent_given=True
    )
    demo.full_clean()  # "demo" is a valid choice: the demo's pilot bots validate
