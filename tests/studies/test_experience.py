"""What the participant experienced: browser time per page, screen, touch, browser; the exports and dashboard."""

import csv
import io
import re
from datetime import timedelta

import pytest
from django.contrib.auth.models import User
from django.core.management import call_command
from django.test import Client

from analysis.services import participants_path
from studies.browsers import Browser, browser_parse
from studies.models import Participant, Response, Study
from studies.selectors import SECONDS_AROUND, SECONDS_PER_PAGE, study_expected_minutes, study_question_pages
from studies.services import CLIENT_MS_MAX

from .conftest import Bot, choose_attentively

pytestmark = pytest.mark.django_db

IPHONE = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Version/17.4 Mobile/15E148 Safari/604.1"
)


@pytest.mark.parametrize(
    "user_agent, expected",
    [
        (
            "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
            "Chrome/124.0.6367.91 Safari/537.36",
            Browser("Chrome", "124.0.6367.91"),
        ),
        (
            "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
            "Chrome/124.0.0.0 Safari/537.36 Edg/124.0.2478.67",
            Browser("Edge", "124.0.2478.67"),
        ),
        (IPHONE, Browser("Safari", "17.4")),
        (
            "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
            "CriOS/124.0.6367.88 Mobile/15E148 Safari/604.1",
            Browser("Chrome", "124.0.6367.88"),
        ),
        ("Mozilla/5.0 (X11; Linux x86_64; rv:125.0) Gecko/20100101 Firefox/125.0", Browser("Firefox", "125.0")),
        (
            "Mozilla/5.0 (Linux; Android 14; SM-S918B) AppleWebKit/537.36 (KHTML, like Gecko) "
            "SamsungBrowser/24.0 Chrome/117.0.0.0 Mobile Safari/537.36",
            Browser("Samsung Internet", "24.0"),
        ),
        (
            "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
            "Chrome/124.0.0.0 Safari/537.36 OPR/109.0.0.0",
            Browser("Opera", "109.0.0.0"),
        ),
        ("curl/8.5.0", Browser("Other", "")),
        ("", Browser("", "")),
    ],
)
def test_browser_family_and_version_from_the_user_agent(user_agent, expected):
    assert browser_parse(user_agent) == expected


def test_consent_records_the_screen_touch_and_browser(study):
    phone = Bot(study, client=Client(HTTP_USER_AGENT=IPHONE))
    phone.consent(form={**phone.consent_form(), "viewport": "390x844", "touch": "1"})
    participant = Participant.objects.get()
    assert (participant.viewport_width, participant.viewport_height, participant.is_touch) == (390, 844, True)
    assert (participant.browser_family, participant.browser_version) == ("Safari", "17.4")
    # Without JavaScript, or with nonsense, nothing is recorded and nobody is refused.
    for device in ({}, {"viewport": "wide", "touch": "y"}, {"viewport": "1x2x3"}):
        bot = Bot(study)
        bot.consent(form={**bot.consent_form(), **device})
        latest = Participant.objects.latest("pk")
        assert (latest.viewport_width, latest.viewport_height, latest.is_touch) == (None, None, None)


def test_the_browsers_time_on_page_is_stored_beside_the_servers(study):
    bot = Bot(study)
    bot.consent()
    bot.answer()  # instructions
    sent = [1234, -5, CLIENT_MS_MAX + 1, "soon", 0]
    for value in sent:
        html, step = bot.current()
        bot.client.post(bot.url, {"step": step, "choice": choose_attentively(html), "client_ms": value})
    html, step = bot.current()
    bot.client.post(bot.url, {"step": step, "choice": choose_attentively(html)})  # an old page: no field
    stored = list(Response.objects.order_by("answered_at", "id").values_list("client_ms", flat=True))
    assert stored == [1234, None, None, None, 0, None]
    assert all(response.response_ms >= 0 for response in Response.objects.all())


def finish_three(study) -> None:
    phone = Bot(study, "PROLIFIC_PID=ph1", client=Client(HTTP_USER_AGENT=IPHONE))
    phone.consent(form={**phone.consent_form(), "viewport": "390x844", "touch": "1"})
    phone.finish(choose_attentively)
    Participant.objects.filter(external_id="ph1").update(feedback='=HYPERLINK("x") <b>too small</b>')
    careless = Bot(study, "PROLIFIC_PID=c1")
    careless.consent()
    careless.finish(lambda html: "right")
    Bot(study, "PROLIFIC_PID=d1").consent("decline")


def test_the_participants_export_has_outcome_screen_browser_and_feedback(study, tmp_path):
    finish_three(study)
    output = tmp_path / "r.csv"
    call_command("export_study", study.slug, "--output", str(output), "--bootstrap", "0")
    assert participants_path(output) == tmp_path / "r.participants.csv"
    with participants_path(output).open() as handle:
        rows = {row["participant"]: row for row in csv.DictReader(handle)}
    phone = Participant.objects.get(external_id="ph1")
    row = rows[phone.label]
    assert "external_id" not in row
    assert (row["outcome"], row["viewport_width"], row["viewport_height"], row["is_touch"]) == (
        "finished", "390", "844", "True",
    )  # fmt: skip
    assert (row["browser_family"], row["browser_version"], row["responses"]) == ("Safari", "17.4", "20")
    # Free text a participant typed is formula-safe in the CSV (peftlab.spreadsheets): a leading ' neutralises "=".
    assert row["feedback"] == f"'{phone.feedback}" and float(row["minutes"]) >= 0
    outcomes = sorted(row["outcome"] for row in rows.values())
    assert outcomes == ["declined", "failed_attention", "finished"]
    with output.open() as handle:
        times = [row["client_ms"] for row in csv.DictReader(handle)]
    assert len(times) == 40 and set(times) == {""}  # the test client runs no script
    staff = Client()
    staff.force_login(User.objects.create_user("r", is_staff=True))
    download = staff.get(f"/analysis/{study.slug}/participants.csv?external_ids=1")
    web = list(csv.DictReader(io.StringIO(download.content.decode())))
    assert download["Content-Disposition"] == 'attachment; filename="pictures-participants.csv"'
    assert {row["external_id"] for row in web} == {"ph1", "c1", "d1"}
    assert Client().get(f"/analysis/{study.slug}/participants.csv").status_code == 302  # staff only


def test_the_dashboard_shows_the_feedback_escaped(study):
    finish_three(study)
    staff = Client()
    staff.force_login(User.objects.create_user("r", is_staff=True))
    html = staff.get(f"/studies/{study.slug}/dashboard/").content.decode()
    label = Participant.objects.get(external_id="ph1").label
    assert "Feedback (2)" in html  # the careless participant left the bot's "fine"
    assert re.search(rf"<td>{label}</td>\s*<td>[^<]+</td>\s*<td class=\"feedback\">", html)
    assert "&lt;b&gt;too small&lt;/b&gt;" in html and "<b>too small" not in html


def test_expected_minutes_come_from_the_page_count_and_the_pilots_median(study):
    pages = study_question_pages(study=study)
    assert pages == 2 * 3 * 3 + 2  # 2 landmarks x 3 arm pairs x 3 questions, and 2 attention checks
    assert study_expected_minutes(study=study) == -(-(pages * SECONDS_PER_PAGE + SECONDS_AROUND) // 60)
    for number, minutes in enumerate((5, 10, 30)):
        pilot = Bot(study, f"PROLIFIC_PID=pilot{number}", client=Client())
        pilot.consent()
        pilot.finish(choose_attentively)
        participant = Participant.objects.get(external_id=f"pilot{number}")
        Participant.objects.filter(pk=participant.pk).update(
            is_pilot=True, finished_at=participant.started_at + timedelta(minutes=minutes)
        )
    # The median pilot took 10 minutes for 20 pages: 30 s a page, so 20 pages take 10 minutes.
    assert study_expected_minutes(study=study) == 10
    # The consent page says so, wherever the study's text writes {duration}.
    assert "It takes about 10 minutes." in Client().get(f"/studies/{study.slug}/").content.decode()
    Study.objects.filter(pk=study.pk).update(consent_text="Allow {duration}; a fixed text stays as written.")
    page = Client().get(f"/studies/{study.slug}/").content.decode()
    assert "Allow 10 minutes; a fixed text stays as written." in page and "{duration}" not in page
