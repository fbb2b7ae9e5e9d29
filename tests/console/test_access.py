"""Every console page refuses anonymous users and non-staff users; staff see them."""

import pytest
from django.test import Client
from django.urls import get_resolver, reverse
from PIL import Image

from generation.models import GenerationRun, PromptSet
from peftlab.models import Job
from studies.models import Study
from studies.services import study_create_from_generation
from trainer.models import TrainingRun

pytestmark = pytest.mark.django_db


def console_urls(pks: dict[str, int]) -> list[str]:
    """Every console route, with a real object's id where the route takes one (a job's unless `pks` names it)."""
    resolver = get_resolver().namespace_dict["console"][1]
    urls = []
    for pattern in resolver.url_patterns:
        converters = pattern.pattern.converters
        kwargs = {"pk": pks.get(pattern.name, pks["job"])} if "pk" in converters else {}
        kwargs |= {"slug": pks["study"]} if "slug" in converters else {}
        urls.append(reverse(f"console:{pattern.name}", kwargs=kwargs))
    return urls


@pytest.fixture
def pks(db, tmp_path, run) -> dict[str, int | str]:
    """A failed dataset job, a training run (with its loss.png) and a generation run recorded without a job, a study."""
    job = Job.objects.create(
        kind=Job.Kind.DATASET, func_path="trainer.jobs.dataset_prepare_job", status="failed"
    )
    Image.new("RGB", (8, 8)).save(tmp_path / "loss.png")
    (tmp_path / "pytorch_lora_weights.safetensors").write_bytes(b"weights")
    training = TrainingRun.objects.create(
        method="lora",
        status="finished",
        dataset_path="/d",
        output_path=str(tmp_path),
        config={},
        files={
            "loss.png": str(tmp_path / "loss.png"),
            "pytorch_lora_weights.safetensors": str(tmp_path / "pytorch_lora_weights.safetensors"),
        },
    )
    generation = GenerationRun.objects.create(prompt_set=PromptSet.objects.create(name="s"), arms=["base"])
    return {
        "job": job.pk,
        "training_run_detail": training.pk,
        "training_run_loss_chart": training.pk,
        "training_run_adapters": training.pk,
        "generation_run_detail": generation.pk,
        "study": study_create_from_generation(run=run, slug="access").slug,
    }


def test_anonymous_users_are_sent_to_the_login_page(client, pks):
    urls = console_urls(pks)
    assert len(urls) >= 12
    for url in urls:
        for method in (client.get, client.post):
            response = method(url)
            assert response.status_code == 302, url
            assert response["Location"].startswith(reverse("admin:login")), url
    assert Job.objects.count() == 1  # no POST started or retried anything
    assert Study.objects.get().status == Study.Status.DRAFT and PromptSet.objects.count() == 2


def test_non_staff_users_get_nothing(plain_client, pks):
    for url in console_urls(pks):
        response = plain_client.get(url)
        assert response.status_code == 302 and response["Location"].startswith(reverse("admin:login")), url
        assert plain_client.post(url).status_code == 302, url
    assert Job.objects.count() == 1 and PromptSet.objects.count() == 2


def test_staff_see_every_page(staff_client, pks):
    for url in console_urls(pks):
        response = staff_client.get(url)
        # Cancel, retry, a study's status and the built-in prompt set are POST-only.
        post_only = url.endswith(("/cancel/", "/retry/", "/status/", "/builtin/"))
        assert response.status_code == (405 if post_only else 200), url


def test_admin_and_rq_dashboard_stay_available_to_staff(staff_client):
    home = staff_client.get(reverse("home")).content.decode()
    for name in ("console:runs", "admin:index", "django_rq:home"):
        assert f'href="{reverse(name)}"' in home, name  # the staff navigation on every page
    assert staff_client.get(reverse("admin:index")).status_code == 200
    assert staff_client.get(reverse("django_rq:home")).status_code == 200
    assert Client().get(reverse("django_rq:home")).status_code == 302
