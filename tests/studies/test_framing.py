"""Participant pages may be framed by MTurk and take posts without a CSRF cookie (checked by origin instead);
staff pages are never framed and never cached; multipart bodies are limited."""

import re

import pytest
from django.contrib.auth.models import User
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client

from studies.models import Participant, Response

from .conftest import Bot

pytestmark = pytest.mark.django_db

MTURK = "https://www.mturk.com https://workersandbox.mturk.com"


def directives(response) -> dict[str, str]:
    policy = response["Content-Security-Policy"]
    return dict(part.strip().split(" ", 1) for part in policy.split(";"))


def test_participant_pages_may_be_framed_by_mturk_only_and_staff_pages_never(study):
    bot = Bot(study, "workerId=W9&assignmentId=A9&hitId=H9")
    entry = bot.client.get(bot.entry)
    bot.consent()
    page = bot.get(bot.url)
    for response in (entry, page):
        assert directives(response)["frame-ancestors"] == f"'self' {MTURK}"
        assert "X-Frame-Options" not in response
    staff = Client()
    staff.force_login(User.objects.create_superuser("admin", "a@example.org", "pw"))
    for url in (f"/studies/{study.slug}/dashboard/", f"/analysis/{study.slug}/responses.csv", "/admin/"):
        response = staff.get(url)
        assert response.status_code == 200, url
        assert response["X-Frame-Options"] == "DENY" and directives(response)["frame-ancestors"] == "'none'"
        # Participants' data is never kept by a browser's or a proxy's cache.
        assert {"private", "no-store"} <= {part.strip() for part in response["Cache-Control"].split(",")}, url


def test_the_frame_origins_come_from_settings(study, settings):
    settings.PEFTLAB_FRAME_ANCESTORS = ["https://lab.example.org"]
    response = Client().get(f"/studies/{study.slug}/")
    assert directives(response)["frame-ancestors"] == "'self' https://lab.example.org"


def test_inline_scripts_run_only_with_the_nonce_of_their_own_response(study):
    bot = Bot(study, "PROLIFIC_PID=nonce1")
    bot.consent()
    bot.answer()  # the instructions
    nonces = []
    for _ in range(2):
        response = bot.client.get(bot.url)
        nonce = re.search(r"'nonce-([^']+)'", directives(response)["script-src"]).group(1)
        assert re.findall(r'<script nonce="([^"]+)">', response.content.decode()) == [nonce]
        nonces.append(nonce)
    assert nonces[0] != nonces[1]
    assert "'unsafe-inline'" not in directives(response)["script-src"]


def consent_post(client: Client, study, *, cookies: bool = True, **headers):
    """Post the consent form (as it was rendered) with `headers`, without cookies unless `cookies`."""
    page = client.get(f"/studies/{study.slug}/")
    if not cookies:
        client.cookies.clear()  # as inside a cross-site frame
    fields = dict(re.findall(r'<input type="hidden" name="(\w+)" value="([^"]*)"', page.content.decode()))
    return client.post(f"/studies/{study.slug}/", {**fields, "decision": "agree"}, headers=headers)


@pytest.mark.parametrize(
    "headers, allowed",
    [
        ({"Sec-Fetch-Site": "same-origin"}, True),  # inside MTurk's frame: no cookie reaches us, yet it works
        ({"Sec-Fetch-Site": "none"}, True),  # the person reloading a posted page: no other site can send it
        ({"Origin": "http://testserver"}, True),  # a browser without Fetch metadata
        ({"Sec-Fetch-Site": "cross-site"}, False),
        ({"Sec-Fetch-Site": "same-site"}, False),
        ({"Origin": "https://evil.example"}, False),
        ({"Origin": "null"}, False),
        ({}, False),  # neither header: Django's token and cookie check, and the cookie is gone
    ],
)
def test_participant_posts_are_checked_by_origin_instead_of_the_csrf_cookie(study, headers, allowed):
    response = consent_post(Client(enforce_csrf_checks=True), study, cookies=False, **headers)
    assert (response.status_code, Participant.objects.exists()) == ((302, True) if allowed else (403, False))


def test_a_post_without_fetch_metadata_still_works_with_the_csrf_cookie(study):
    client = Client(enforce_csrf_checks=True)
    assert consent_post(client, study).status_code == 302 and Participant.objects.count() == 1


def test_staff_posts_still_need_the_csrf_token(study):
    client = Client(enforce_csrf_checks=True)
    client.force_login(User.objects.create_superuser("admin", "a@example.org", "pw"))
    response = client.post(
        "/admin/studies/study/", {"action": "close_studies", "_selected_action": [study.pk]},
        headers={"Sec-Fetch-Site": "same-origin"},
    )  # fmt: skip
    assert response.status_code == 403


def test_a_forged_answer_shows_the_page_again_with_a_note_and_no_cookie(study):
    bot = Bot(study, "PROLIFIC_PID=forged1")
    bot.consent()
    bot.answer()
    html, step = bot.current()
    response = bot.client.post(bot.url, {"step": step, "choice": "middle"})
    assert response.status_code == 302 and response["Location"] == bot.url + "?invalid=1"
    bot.client.cookies.clear()
    page = bot.client.get(response["Location"]).content.decode()
    assert "Please answer the question by choosing one of the answers below." in page
    assert not Response.objects.exists()


def test_a_large_multipart_body_is_refused_before_it_is_read(study, settings):
    bot = Bot(study, "PROLIFIC_PID=big1")
    bot.consent()
    bot.answer()
    _, step = bot.current()
    big = SimpleUploadedFile("big.bin", b"\0" * (10 * 1024 * 1024))
    response = bot.client.post(bot.url, {"step": step, "choice": "left", "file": big})
    assert response.status_code == 413 and b"too large" in response.content
    assert not Response.objects.exists()
    small = SimpleUploadedFile("small.bin", b"\0" * 1024)
    assert bot.client.post(bot.url, {"step": step, "choice": "left", "file": small}).status_code == 302
    assert Response.objects.count() == 1
