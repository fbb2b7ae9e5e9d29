"""Every page has a CSP whose nonce every inline script carries; unhandled errors reach stderr with their
traceback when DEBUG is off."""

import io
import logging
import re
from pathlib import Path
from unittest import mock

import pytest
from django.test import Client

REPO = Path(__file__).resolve().parent.parent
TEMPLATE_DIRS = [REPO / "templates", *REPO.glob("*/templates")]


def test_every_inline_script_in_our_templates_carries_the_nonce():
    scripts = [
        (path, tag)
        for folder in TEMPLATE_DIRS
        for path in folder.rglob("*.html")
        for tag in re.findall(r"<script\b[^>]*>", path.read_text())
    ]
    assert scripts  # the check looks at something
    inline = [(path, tag) for path, tag in scripts if "src=" not in tag]
    assert inline and all('nonce="{{ csp_nonce }}"' in tag for _, tag in inline), inline


@pytest.mark.django_db
def test_every_page_has_a_content_security_policy():
    response = Client().get("/")
    policy = response["Content-Security-Policy"]
    assert "default-src 'self'" in policy and "object-src 'none'" in policy
    assert re.search(r"script-src 'self' 'nonce-[\w-]{20,}'", policy)
    assert "frame-ancestors 'none'" in policy and response["X-Frame-Options"] == "DENY"


@pytest.mark.django_db
def test_an_unhandled_error_is_logged_with_its_traceback_on_stderr(settings):
    assert not settings.DEBUG
    handler = next(h for h in logging.getLogger("django.request").handlers if isinstance(h, logging.StreamHandler))
    stream = io.StringIO()
    previous = handler.setStream(stream)
    try:
        with mock.patch("peftlab.views.render", side_effect=RuntimeError("the database went away")):
            response = Client(raise_request_exception=False).get("/")
    finally:
        handler.setStream(previous)
    assert response.status_code == 500
    # What a participant sees instead: a page of its own (no template tags, so it renders whatever broke).
    assert b"your earlier answers are saved" in response.content
    logged = stream.getvalue()
    assert "ERROR django.request: Internal Server Error: /" in logged
    assert "Traceback (most recent call last)" in logged and "RuntimeError: the database went away" in logged
    # A StreamHandler without a stream writes to stderr, where gunicorn's error log reads it.
    assert settings.LOGGING["handlers"]["console"] == {"class": "logging.StreamHandler", "formatter": "plain"}
