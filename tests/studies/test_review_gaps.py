"""What a review of the suite found untested: image tokens follow the study's own secret and no other key; a
second answer to one page takes the "already answered" path (the IntegrityError branch itself); the URL
converters refuse a NUL byte before any query, SQLite included."""

import hashlib
import hmac

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import Resolver404, resolve

from studies import selectors, services
from studies.models import Participant, Response, new_media_secret

from .conftest import Bot

pytestmark = pytest.mark.django_db

CONSTANT_KEYS = ["", "0" * 64, "secret", "peftlab", "studies.media", "django-insecure-peftlab-development-only"]


def started(study, name: str) -> Participant:
    bot = Bot(study, f"PROLIFIC_PID={name}")
    bot.consent()
    return Participant.objects.get(external_id=name)


def test_tokens_follow_the_studys_own_secret_and_no_other_key(study, settings):
    participant = started(study, "tokens1")
    trial = next(iter(selectors.study_contents(study=study).trials.values()))
    idents = [("image", trial.image_a_id), ("image", trial.image_b_id), ("reference", trial.prompt.reference_images[0])]
    before = [selectors.media_token(participant=participant, kind=kind, ident=ident) for kind, ident in idents]
    for (kind, ident), token in zip(idents, before, strict=True):
        message = f"{participant.code}:{kind}:{ident}".encode()
        for key in [*CONSTANT_KEYS, settings.SECRET_KEY]:
            for digest in (hashlib.sha256, hashlib.sha1, hashlib.md5):
                assert hmac.new(key.encode(), message, digest).hexdigest()[:32] != token
        # The same key, message and digest as media_token: the one match allowed is the study's own secret.
        assert hmac.new(study.media_secret.encode(), message, hashlib.sha256).hexdigest()[:32] == token
    study.media_secret = new_media_secret()
    study.save(update_fields=["media_secret"])
    participant = Participant.objects.select_related("study").get(pk=participant.pk)
    after = [selectors.media_token(participant=participant, kind=kind, ident=ident) for kind, ident in idents]
    assert set(before).isdisjoint(after)
    # An old token names nothing once the secret has changed.
    with pytest.raises(Exception, match="no such image"):
        selectors.media_source(participant=participant, token=before[0])
    assert selectors.media_source(participant=participant, token=after[0])


def test_a_second_answer_to_one_page_takes_the_already_answered_path(study):
    bot = Bot(study, "PROLIFIC_PID=twice1")
    bot.consent()
    bot.answer()  # the instructions
    participant = Participant.objects.get(external_id="twice1")
    page = services.participant_pages(participant=participant)[participant.position]
    shown = participant.shown(page.trial)
    # Another request stored this page's answer but has not moved the participant on yet (the race the
    # row lock normally prevents): only the unique constraint stands between it and a second row.
    Response.objects.create(
        participant=participant, trial=page.trial, question=page.question, left_arm=shown.left_arm,
        right_arm=shown.right_arm, choice="right", chosen_arm=shown.right_arm, response_ms=5,
        shown_at=participant.started_at, answered_at=participant.started_at,
    )  # fmt: skip
    assert services.response_record(participant=participant, step=participant.position, choice="left") is False
    assert list(Response.objects.values_list("choice", flat=True)) == ["right"]
    participant.refresh_from_db()
    assert participant.position == 1
    # Through the page: the post is answered with the participant's page, not a 500.
    _, step = bot.current()
    response = bot.client.post(bot.url, {"step": step, "choice": "left"})
    assert response.status_code == 302 and response["Location"] == bot.url
    assert Response.objects.count() == 1


@pytest.mark.parametrize(
    "path",
    ["/studies/pic%00tures/", "/studies/pictures/p/ab%00cd/", "/studies/pictures/p/CODE/m/ab%00cd.png"],
)
def test_the_url_converters_refuse_a_nul_byte_before_any_query(study, path):
    with pytest.raises(Resolver404):
        resolve(path.replace("%00", "\x00"))
    with CaptureQueriesContext(connection) as queries:
        assert Bot(study).client.get(path).status_code == 404
    assert not [query["sql"] for query in queries.captured_queries if "studies_" in query["sql"]]
