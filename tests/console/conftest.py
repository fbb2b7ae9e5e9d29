"""Fixtures for the console tests: a staff researcher, a participant-like user, a client for each."""

import pytest
from django.contrib.auth import get_user_model

# The studies' small generation run (two landmarks x three arms), media in a temporary folder, and Chromium.
from tests.studies.conftest import browser, media_root, run  # noqa: F401


@pytest.fixture
def staff_client(client, db):
    """A logged-in staff user (a researcher)."""
    user = get_user_model().objects.create_user("researcher", password="pw-for-tests", is_staff=True)
    client.force_login(user)
    return client


@pytest.fixture
def plain_client(client, db):
    """A logged-in user without staff rights."""
    user = get_user_model().objects.create_user("someone", password="pw-for-tests")
    client.force_login(user)
    return client
