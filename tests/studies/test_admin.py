"""A study added in the admin gets its trials built, and the reference questions unless it has its own."""

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


def test_the_admin_refuses_a_question_with_unknown_options(run):
    client = Client()
    client.force_login(User.objects.create_superuser("admin", "a@example.org", "pw"))
    form = {
        "title": "Pictures", "slug": "bad-question", "status": "draft", "consent_text": "ok?",
        "instructions": "click", "target_participants": "10", "completion_code": "ABC",
        "completion_redirect_url": "", "generation_run": run.pk, "arms": '["lora", "ti"]',
        "questions-TOTAL_FORMS": "1", "questions-INITIAL_FORMS": "0",
        "questions-0-position": "0", "questions-0-key": "style", "questions-0-text": "Which?",
        "questions-0-options": '["maybe"]',
        "trials-TOTAL_FORMS": "0", "trials-INITIAL_FORMS": "0",
    }  # fmt: skip
    response = client.post("/admin/studies/study/add/", form)
    assert response.status_code == 200 and b"unknown options [&#x27;maybe&#x27;]; use both/neither." in response.content
    assert not Study.objects.filter(slug="bad-question").exists()
    response = client.post("/admin/studies/study/add/", {**form, "questions-0-options": '["neither"]'})
    assert response.status_code == 302
    study = Study.objects.get(slug="bad-question")
    # The admin's own question is kept (no reference questions added) and trials are built by the service.
    assert [(q.key, q.options) for q in study.questions.all()] == [("style", ["neither"])]
    assert study.trials.count() == 4  # two prompts x one pair, two attention checks
