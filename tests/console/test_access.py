"""Every console page refuses anonymous users and non-staff users; staff see them."""

import pytest
from django.test import Client
from django.urls import get_resolver, reverse

from peftlab.models import Job

pytestmark = pytest.mark.django_db


def console_urls(job_pk: int) -> list[str]:
    """Every console route, with a real job id where the route takes one."""
    resolver = get_resolver().namespace_dict["console"][1]
    urls = []
    for pattern in resolver.url_patterns:
        kwargs = {"pk": job_pk} if "pk" in pattern.pattern.converters else {}
        urls.append(reverse(f"console:{pattern.name}", kwargs=kwargs))
    return urls


@pytest.fixture
def job(db) -> Job:
    return Job.objects.create(
        kind=Job.Kind.DATASET, func_path="trainer.jobs.dataset_prepare_job", status="failed"
    )


def test_anonymous_users_are_sent_to_the_login_page(client, job):
    urls = console_urls(job.pk)
    assert len(urls) >= 6
    for url in urls:
        for method in (client.get, client.post):
            response = method(url)
            assert response.status_code == 302, url
            assert response["Location"].startswith(reverse("admin:login")), url
    assert Job.objects.count() == 1  # no POST started or retried anything


def test_non_staff_users_get_nothing(plain_client, job):
    for url in console_urls(job.pk):
        response = plain_client.get(url)
        assert response.status_code == 302 and response["Location"].startswith(reverse("admin:login")), url
        assert plain_client.post(url).status_code == 302, url
    assert Job.objects.count() == 1


def test_staff_see_every_page(staff_client, job):
    for url in console_urls(job.pk):
        response = staff_client.get(url)
        # Cancel and retry are POST-only.
        assert response.status_code == (405 if url.endswith(("/cancel/", "/retry/")) else 200), url


def test_admin_and_rq_dashboard_stay_available_to_staff(staff_client):
    assert staff_client.get(reverse("admin:index")).status_code == 200
    assert staff_client.get(reverse("django_rq:home")).status_code == 200
    assert Client().get(reverse("django_rq:home")).status_code == 302
