"""PostgreSQL: many participants answering at once, each answer also posted twice simultaneously."""

import re
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
from django.db import connection, connections
from django.test import Client

from studies.models import Participant, Response

from .conftest import Bot, choose_attentively

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]


def walk_with_double_posts(bot: Bot) -> None:
    """Answer every page, sending each answer twice at the same instant (a double click on two connections)."""
    try:
        while True:
            html, step = bot.current()
            if not step:
                return
            data = (
                {"step": step, "choice": choose_attentively(html)}
                if 'id="trial-form"' in html
                else {"step": step}
            )
            barrier = threading.Barrier(2)

            def post(data=data, barrier=barrier) -> int:
                try:
                    barrier.wait()
                    return bot.client.post(bot.url, data).status_code
                finally:
                    connections.close_all()

            with ThreadPoolExecutor(2) as pool:
                assert list(pool.map(lambda _: post(), range(2))) == [302, 302]
    finally:
        connections.close_all()


def test_simultaneous_participants_and_duplicate_posts_store_each_answer_once(study):
    if connection.vendor != "postgresql":
        pytest.skip("set DATABASE_URL to PostgreSQL (as .ci/run does) to test concurrent answers")
    bots = [Bot(study, f"PROLIFIC_PID=c{number}") for number in range(6)]
    for bot in bots:
        bot.consent()
    with ThreadPoolExecutor(len(bots)) as pool:
        list(pool.map(walk_with_double_posts, bots))
    per_participant = study.trials.filter(is_attention_check=False).count() * study.questions.count() + 2
    for participant in Participant.objects.filter(study=study):
        assert participant.finished_at is not None
        assert participant.responses.count() == per_participant
    assert Response.objects.count() == per_participant * len(bots)


def test_simultaneous_consents_with_one_prolific_id_make_one_participant(study):
    if connection.vendor != "postgresql":
        pytest.skip("set DATABASE_URL to PostgreSQL (as .ci/run does) to test concurrent consents")
    barrier = threading.Barrier(4)

    def consent(_: int) -> str:
        try:
            bot = Bot(study, "PROLIFIC_PID=same")
            form = bot.consent_form()  # four tabs show the form; then all four agree at once
            barrier.wait()
            return bot.consent(form=form)
        finally:
            connections.close_all()

    with ThreadPoolExecutor(4) as pool:
        urls = set(pool.map(consent, range(4)))
    assert len(urls) == 1 and Participant.objects.filter(study=study).count() == 1


def test_a_consent_double_click_without_platform_ids_makes_one_participant(study):
    if connection.vendor != "postgresql":
        pytest.skip("set DATABASE_URL to PostgreSQL (as .ci/run does) to test concurrent consents")
    html = Bot(study).client.get(f"/studies/{study.slug}/").content.decode()
    nonce = re.search(r'name="entry" value="([^"]+)"', html).group(1)
    barrier = threading.Barrier(2)

    def consent(_: int) -> str:
        try:
            client = Client()  # the first post's session cookie has not come back yet
            barrier.wait()
            return client.post(f"/studies/{study.slug}/", {"decision": "agree", "entry": nonce})["Location"]
        finally:
            connections.close_all()

    with ThreadPoolExecutor(2) as pool:
        urls = set(pool.map(consent, range(2)))
    assert len(urls) == 1 and Participant.objects.filter(study=study).count() == 1
