"""Pilots (flagged, left out of counts, caps, analyses and exports by default) and the staff preview."""

import csv
import json
import re

import pytest
from django.core.management import call_command
from django.test import Client

from analysis.selectors import study_report
from studies.models import Participant, Study
from studies.selectors import study_pilot_key, study_response_rows, study_stats

from .conftest import Bot, choose_attentively

pytestmark = pytest.mark.django_db


def pilot_query(study: Study) -> str:
    return f"pilot={study_pilot_key(study=study)}"


def test_the_pilot_link_enters_a_draft_and_flags_the_participant(study):
    study.status = Study.Status.DRAFT
    study.save()
    assert b"not open" in Client().get(f"/studies/{study.slug}/").content
    assert b"not open" in Client().get(f"/studies/{study.slug}/?pilot=guess").content
    pilot = Bot(study, pilot_query(study))
    pilot.consent()  # the key travels through the consent form
    pilot.finish(choose_attentively)
    participant = Participant.objects.get()
    assert participant.is_pilot and participant.finished_at is not None
    assert "Thank you" in pilot.pages[-1]


def test_staff_are_always_pilots_even_on_an_open_study(study, admin_client):
    staff = Bot(study, client=admin_client)
    staff.consent()
    assert Participant.objects.get().is_pilot


def test_pilots_are_left_out_of_counts_caps_analyses_and_exports_unless_asked(study, tmp_path, capsys):
    study.max_participants = 1
    study.save()
    pilot = Bot(study, f"PROLIFIC_PID=pilot&{pilot_query(study)}")
    pilot.consent()
    pilot.finish(choose_attentively)
    real = Bot(study, "PROLIFIC_PID=real")  # the pilot took no place
    real.consent()
    real.finish(choose_attentively)
    assert b"This study is full" in Client().get(f"/studies/{study.slug}/?PROLIFIC_PID=late").content
    stats = study_stats(study=study)
    assert (stats.started, stats.finished, stats.pilots) == (1, 1, 1)
    assert {row["external_id"] for row in study_response_rows(study=study)} == {"real"}
    both = study_response_rows(study=study, include_pilot=True)
    assert {(row["external_id"], row["participant_is_pilot"]) for row in both} == {("real", False), ("pilot", True)}
    assert study_report(study=study).exclusions.participants_total == 1
    assert study_report(study=study, include_pilot=True).exclusions.participants_total == 2
    for flags, expected in (([], {"False"}), (["--include-pilot"], {"False", "True"})):
        output = tmp_path / f"export{len(flags)}.csv"
        call_command("export_study", study.slug, "--output", str(output), "--bootstrap", "0", *flags)
        with output.open() as handle:
            assert {row["participant_is_pilot"] for row in csv.DictReader(handle)} == expected
        assert json.loads(output.with_name(f"{output.name}.summary.json").read_text())["pilots_included"] == bool(flags)
    capsys.readouterr()
    call_command("analyze_study", study.slug, "--json", "--bootstrap", "0", "--include-pilot")
    assert json.loads(capsys.readouterr().out)["exclusions"]["participants_total"] == 2


def test_staff_preview_walks_every_page_without_recording_anything(study, admin_client):
    url = f"/studies/{study.slug}/preview/"
    assert Client().get(url).status_code == 302  # staff only (to the login page)
    seen, images, current = [], 0, url
    page = admin_client.get(url)
    while True:
        assert page.status_code == 200
        html = page.content.decode()
        seen.append(html)
        for src in re.findall(r'<img src="([^"]+)"', html):
            image = admin_client.get(src)
            assert image.status_code == 200 and image["Content-Type"] == "image/png"
            images += 1
        if "Thank you!" in html:
            break
        assert 'id="preview-next"' in html
        current = admin_client.post(current, {"step": "0", "choice": "left"})["Location"]  # the page's own form
        page = admin_client.get(current)
    pages = 1 + 1 + study.trials.filter(is_attention_check=False).count() * study.questions.count() + 2 + 2
    assert len(seen) == pages and images > 0
    assert "Before you start" in seen[0] and "Instructions" in seen[1] and "Almost done" in seen[-2]
    assert study.completion_code in seen[-1]
    assert not Participant.objects.exists()
    full = admin_client.get(f"{url}?outcome=full").content.decode()
    assert "This study is full" in full and "Staff preview" in full
    # A preview image for anyone but staff is refused.
    src = re.findall(r'<img src="([^"]+)"', seen[2])[0]
    assert Client().get(src).status_code == 302
