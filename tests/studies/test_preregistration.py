"""Preregistration: lock_plan freezes the analysis plan with its SHA-256; a locked study's design is guarded."""

import hashlib
import json
from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from peftlab.errors import UserInputError
from studies.models import Study
from studies.services import (
    ExternalIds,
    participant_answer_all,
    participant_start,
    study_contents_build,
    study_trials_build,
)

pytestmark = pytest.mark.django_db


def run(*args: str) -> str:
    out = StringIO()
    call_command(*args, stdout=out, stderr=StringIO())
    return out.getvalue()


def test_lock_plan_prints_the_sha256_of_the_exported_plan(study, tmp_path):
    text = run("lock_plan", study.slug, "--alpha", "0.01", "--output", str(tmp_path / "plan.json"))
    study.refresh_from_db()
    exported = (tmp_path / "plan.json").read_bytes()
    # An OSF reviewer checks the file with sha256sum alone.
    assert hashlib.sha256(exported).hexdigest() == study.plan_sha256
    assert text.strip().endswith(f"sha256 {study.plan_sha256}")
    plan = json.loads(exported)
    assert plan == study.plan
    assert len(plan["headline"]) == 3 * 3  # three reference questions x three pairs of base, lora, ti
    assert {"question": "style", "arm_a": "lora", "arm_b": "ti"} in plan["headline"]
    assert plan["alpha"] == 0.01 and plan["test"]["unit"] == "participant"
    assert plan["exclusions"]["failed_attention_check"] == "excluded"
    assert plan["exclusions"]["attention_checks"] == study.trials.filter(is_attention_check=True).count()
    assert plan["target_participants"] == study.target_participants
    assert "stopping" in plan and plan["stopping"] is None


def test_a_plan_is_locked_once_and_re_exported_identically(study, tmp_path):
    first = run("lock_plan", study.slug)
    with pytest.raises(CommandError, match="already has a locked plan"):
        run("lock_plan", study.slug)
    again = run("lock_plan", study.slug, "--output", str(tmp_path / "again.json"))
    assert first.strip().splitlines()[-1] == again.strip().splitlines()[-1]
    assert hashlib.sha256((tmp_path / "again.json").read_bytes()).hexdigest() in again


def test_a_plan_after_the_data_arrived_is_refused(study):
    participant = participant_start(study=study, ids=ExternalIds(), consent_given=True)
    participant_answer_all(participant=participant, choose=lambda participant, page: "left")
    with pytest.raises(CommandError, match="not a preregistration"):
        run("lock_plan", study.slug)
    study.refresh_from_db()
    assert study.plan_locked_at is None and study.plan is None


def test_locked_study_refuses_design_changes_or_records_a_deviation(study):
    run("lock_plan", study.slug)
    trials = study.trials.count()
    with pytest.raises(UserInputError, match='locked analysis plan .* --deviate "reason"'):
        study_trials_build(study=study, attention_checks=4)
    with pytest.raises(UserInputError, match="locked analysis plan"):
        study_contents_build(study=study, attention_checks=0)
    assert study.trials.count() == trials
    assert Study.objects.get(pk=study.pk).plan_deviations == []

    study_trials_build(study=study, attention_checks=4, deviate="two more attention checks after the pilot")
    study.refresh_from_db()
    assert study.trials.count() > trials
    (deviation,) = study.plan_deviations
    assert deviation["reason"] == "two more attention checks after the pilot"
    assert "4 attention check(s)" in deviation["change"]

    data = json.loads(run("analyze_study", study.slug, "--json", "--bootstrap", "0"))
    assert data["plan"]["sha256"] == study.plan_sha256
    assert data["plan"]["locked_at"] == study.plan_locked_at.isoformat(timespec="seconds")
    assert data["plan"]["deviations"] == study.plan_deviations
    assert f"preregistered (sha256 {study.plan_sha256}" in data["methods"]
    assert "with 1 deviation: building trials" in data["methods"]


def test_unlocked_study_reports_no_plan(study):
    data = json.loads(run("analyze_study", study.slug, "--json", "--bootstrap", "0"))
    assert data["plan"] is None and "not preregistered" in data["methods"]


def test_the_admin_shows_a_locked_studys_design_read_only(study, admin_client):
    url = f"/admin/studies/study/{study.pk}/change/"
    form = admin_client.get(url).context["adminform"].form
    assert "arms" in form.fields and "questions-TOTAL_FORMS" in admin_client.get(url).content.decode()
    run("lock_plan", study.slug)
    page = admin_client.get(url)
    assert "arms" not in page.context["adminform"].form.fields
    assert "generation_run" not in page.context["adminform"].form.fields
    questions = next(
        inline for inline in page.context["inline_admin_formsets"] if inline.opts.model.__name__ == "Question"
    )
    assert not (
        questions.has_add_permission or questions.has_change_permission or questions.has_delete_permission
    )
