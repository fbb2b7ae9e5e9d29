"""A study added in the admin gets its trials built and the reference questions."""

import pytest
from django.contrib.auth.models import User
from django.test import Client

from studies.models import Study

pytestmark = pytest.mark.django_db


def test_adding_a_study_in_the_admin_builds_its_trials(run):
    client = Client()
    client.force_login(User.objects.create_superuser("admin", "a@example.org", "pw"))
    form = {
        "title": "Pictures",
        "slug": "admin-pictures",
        "status": "draft",
        "consent_text": "ok?",
        "instructions": "click",
        "target_participants": "10",
        "completion_code": "ABC",
        "completion_redirect_url": "",
        "generation_run": run.pk,
        "arms": '["lora", "ti"]',
        "questions-TOTAL_FORMS": "0",
        "questions-INITIAL_FORMS": "0",
        "trials-TOTAL_FORMS": "0",
        "trials-INITIAL_FORMS": "0",
    }
    response = client.post("/admin/studies/study/add/", form)
    assert response.status_code == 302, response.content.decode()[:2000]
    study = Study.objects.get(slug="admin-pictures")
    assert [q.key for q in study.questions.all()] == ["artwork", "style", "identity"]
    assert study.trials.filter(is_attention_check=False).count() == 2
    assert study.trials.filter(is_attention_check=True).count() == 2
    assert client.get(f"/admin/studies/study/{study.pk}/change/").status_code == 200
    response = client.post(
        "/admin/studies/study/add/", {**form, "slug": "other", "arms": '["lora", "dreamy"]'}
    )
    assert response.status_code == 200 and b"have no images in run" in response.content
    assert not Study.objects.filter(slug="other").exists()
