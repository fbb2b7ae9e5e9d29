"""The staff dashboard: the randomisation audit per arm, the live headline, and the preregistration button."""

import pytest
from django.contrib.auth.models import User
from django.test import Client

from studies.models import Participant, Trial
from studies.selectors import study_randomisation_audit
from studies.services import ExternalIds, participant_answer_all, participant_start

pytestmark = pytest.mark.django_db


@pytest.fixture
def staff():
    client = Client()
    client.force_login(User.objects.create_user("staff", password="x", is_staff=True))
    return client


def started(study, count: int) -> list[Participant]:
    return [
        participant_start(
            study=study, ids=ExternalIds(external_id=f"P{i}", source="prolific"), consent_given=True
        )
        for i in range(count)
    ]


def test_audit_counts_each_arms_sides_and_halves_as_assigned(study):
    participants = started(study, 5)
    participant_start(study=study, ids=ExternalIds(external_id="no", source="prolific"), consent_given=False)
    audit = {row.arm: row for row in study_randomisation_audit(study=study)}
    assert set(audit) == {"base", "lora", "ti"}
    # Recount from what each participant was assigned: the sides and the order of the regular trials.
    regular = {t.pk: t for t in Trial.objects.filter(study=study, is_attention_check=False)}
    for arm, row in audit.items():
        left = right = first = 0
        for participant in participants:
            order = [pk for pk in participant.trial_order if pk in regular]
            for index, pk in enumerate(order):
                shown = participant.shown(regular[pk])
                left += shown.left_arm == arm
                right += shown.right_arm == arm
                first += arm in (shown.left_arm, shown.right_arm) and index < len(order) / 2
        assert (row.left, row.right, row.first_half) == (left, right, first)
        # 2 landmarks x 2 pairs per arm = 4 trials each; the Euler orientation gives exactly 2 left, 2 right.
        assert (row.left, row.right) == (2 * 5, 2 * 5)
        assert row.first_half + row.second_half == 4 * 5 and row.left_share == 0.5
        assert 0 <= row.mean_position <= 1


def test_dashboard_shows_audit_with_display_names_live_headline_and_lock_button(study, staff):
    study.arm_labels = {"lora": "LoRA (rank 8)"}
    study.save()
    for participant in started(study, 3):
        participant_answer_all(
            participant=participant,
            choose=lambda participant, page: page.trial.expected_choice or "left",
        )
    page = staff.get(f"/studies/{study.slug}/dashboard/").content.decode()
    assert 'id="randomisation-audit"' in page and "<td>LoRA (rank 8)</td>" in page
    assert f'data-url="/analysis/{study.slug}/headline/"' in page
    assert "Lock the analysis plan" in page
    fragment = staff.get(f"/analysis/{study.slug}/headline/").content.decode()
    assert "3 took part, 0 excluded, 3 analysed." in fragment
    assert "LoRA (rank 8)" in fragment and "data:image/svg+xml;base64," in fragment
    assert Client().get(f"/analysis/{study.slug}/headline/").status_code == 302


def test_lock_button_locks_once_and_says_why_not_after_data(study, staff):
    started(study, 1)
    response = staff.post(f"/analysis/{study.slug}/lock-plan/", follow=True)
    study.refresh_from_db()
    assert study.plan_locked_at is not None
    page = response.content.decode()
    assert f"Analysis plan locked: sha256 {study.plan_sha256}" in page and "No deviations." in page
    again = staff.post(f"/analysis/{study.slug}/lock-plan/", follow=True).content.decode()
    assert "already has a locked plan" in again
    assert staff.get(f"/analysis/{study.slug}/lock-plan/").status_code == 405
