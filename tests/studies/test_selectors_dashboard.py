"""The flat response rows analysis reads, the staff dashboard, and the export it links to."""

import csv
import io
import re

import pytest
from django.contrib.auth.models import User
from django.test import Client

from peftlab.errors import UserInputError
from studies.models import Participant
from studies.selectors import study_get_by_slug, study_response_rows

from .conftest import Bot, choose_attentively

pytestmark = pytest.mark.django_db

ROW_KEYS = {
    "participant", "external_id", "trial", "trial_index", "question", "question_text", "landmark", "prompt",
    "left_arm", "right_arm", "choice", "chosen_arm", "response_ms", "client_ms", "shown_at", "answered_at",
    "is_attention_check", "attention_passed", "participant_failed_attention", "participant_finished",
    "participant_is_pilot", "generation_run", "left_image", "right_image", "left_seed", "right_seed", "left_rendered_prompt",
    "right_rendered_prompt",
}  # fmt: skip


def test_response_rows_flag_attention_failures_and_unfinished_participants(study):
    attentive = Bot(study, "PROLIFIC_PID=good")
    attentive.consent()
    attentive.finish(choose_attentively)
    careless = Bot(study)
    careless.consent()
    for _ in range(8):  # instructions, then answers "left" everywhere, checks included; never finishes
        careless.answer(lambda html: "right" if "choose the image on the left" in html else "left")
    rows = study_response_rows(study=study)
    assert all(set(row) == ROW_KEYS for row in rows)
    good = [row for row in rows if row["external_id"] == "good"]
    bad = [row for row in rows if row["external_id"] == ""]
    assert len(good) == 20 and len(bad) == 7
    assert good[0]["participant"] == Participant.objects.get(external_id="good").label
    assert good[0]["participant"].startswith("P0")
    assert all(row["participant_finished"] and not row["participant_failed_attention"] for row in good)
    assert {row["trial_index"] for row in good} == set(range(8))
    assert all(not row["participant_finished"] for row in bad)
    checks = [row for row in rows if row["is_attention_check"]]
    assert checks and all(row["question"] == "attention_check" for row in checks)
    assert all(row["attention_passed"] is None for row in rows if not row["is_attention_check"])
    if any(row["attention_passed"] is False for row in bad):
        assert all(row["participant_failed_attention"] for row in bad)
    regular = [row for row in rows if not row["is_attention_check"]]
    assert {row["question"] for row in regular} == {"artwork", "style", "identity"}
    for row in regular:
        assert row["chosen_arm"] == {"left": row["left_arm"], "right": row["right_arm"]}.get(
            row["choice"], ""
        )
        assert isinstance(row["response_ms"], int) and row["shown_at"] <= row["answered_at"]


def test_study_get_by_slug(study):
    assert study_get_by_slug(slug="pictures") == study
    with pytest.raises(UserInputError, match="pictures"):
        study_get_by_slug(slug="nope")


def test_dashboard_is_staff_only_and_counts_participants(study):
    bot = Bot(study, "PROLIFIC_PID=dash1&STUDY_ID=s&SESSION_ID=x")
    bot.consent()
    bot.finish(choose_attentively)
    Bot(study).consent("decline")
    assert Client().get(f"/studies/{study.slug}/dashboard/").status_code == 302
    staff = Client()
    staff.force_login(User.objects.create_user("r", is_staff=True))
    html = staff.get(f"/studies/{study.slug}/dashboard/").content.decode()
    assert "http://testserver/studies/pictures/" in html
    assert "<td>1</td><td>1</td><td>1</td>" in html  # started, finished, declined
    assert " min</td>" in html


def test_the_dashboard_downloads_the_one_pseudonymous_export(study):
    bot = Bot(study, "PROLIFIC_PID=dash1&STUDY_ID=s&SESSION_ID=x")
    bot.consent()
    bot.finish(choose_attentively)
    staff = Client()
    staff.force_login(User.objects.create_user("r", is_staff=True))
    html = staff.get(f"/studies/{study.slug}/dashboard/").content.decode()
    links = re.findall(r'href="([^"]*responses\.csv[^"]*)"', html.replace("&amp;", "&"))
    assert links == [
        "/analysis/pictures/responses.csv",
        "/analysis/pictures/responses.csv?external_ids=1",
        "/analysis/pictures/responses.csv?pilot=1",
    ]
    assert staff.get(f"/studies/{study.slug}/responses.csv").status_code == 404  # no second export
    pseudonymous = staff.get(links[0]).content.decode()
    rows = list(csv.DictReader(io.StringIO(pseudonymous)))
    assert len(rows) == 20 and "external_id" not in rows[0] and "dash1" not in pseudonymous
    assert rows[0]["participant"] == Participant.objects.get(external_id="dash1").label
    with_ids = list(csv.DictReader(io.StringIO(staff.get(links[1]).content.decode())))
    assert {row["external_id"] for row in with_ids} == {"dash1"}
