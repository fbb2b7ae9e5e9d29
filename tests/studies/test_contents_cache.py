"""The participant path's savings: a study's contents kept per process (fresh after an edit), images by ETag."""

import io
import re

import pytest
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.db import connection
from django.test.utils import CaptureQueriesContext
from PIL import Image

from generation.models import Prompt
from studies.models import Question, Trial

from .conftest import Bot, png_bytes


def question_texts(bot: Bot) -> set[str]:
    """The questions on every page of the bot's run (answering each page)."""
    texts = set()
    while True:
        html, step = bot.current()
        if not step:
            return texts
        texts.update(re.findall(r'<h1 class="question" id="question">([^<]*)</h1>', html))
        bot.answer()


def _walker(study, pid: str) -> Bot:
    bot = Bot(study, f"PROLIFIC_PID={pid}")
    bot.consent()
    return bot


@pytest.mark.django_db
def test_a_study_edited_before_anyone_started_shows_the_edit(study):
    question = Question.objects.filter(study=study).first()
    assert question.text in question_texts(_walker(study, "pilot"))  # the contents are now kept in memory
    question.text = "Which picture feels calmer?"
    question.save()  # as the admin does
    assert "Which picture feels calmer?" in question_texts(_walker(study, "after-edit"))


@pytest.mark.django_db
def test_a_question_added_before_anyone_started_gets_its_pages(study):
    first = _walker(study, "first")
    first.current()  # the contents are now kept by this process
    Question.objects.create(study=study, position=99, key="calm", text="Which is calmer?")
    texts = question_texts(_walker(study, "second"))
    assert "Which is calmer?" in texts


@pytest.mark.django_db
def test_a_deleted_trial_is_not_drawn_for_the_next_participant(study):
    _walker(study, "early").current()
    trial = Trial.objects.filter(study=study, is_attention_check=False).last()
    deleted = trial.pk
    trial.delete()
    late = _walker(study, "late")
    late.current()
    assert deleted not in study.participants.get(external_id="late").trial_order


@pytest.mark.django_db
def test_a_prompt_whose_reference_images_are_replaced_shows_the_new_ones(study):
    _walker(study, "before").current()  # the contents, prompts included, are now kept by this process
    colour = (200, 30, 90)  # no other image of the study has it
    replacement = default_storage.save("references/replacement.png", ContentFile(png_bytes(colour, "new")))
    for prompt in Prompt.objects.filter(trials__study=study).distinct():
        prompt.reference_images = [replacement]
        prompt.save()  # as the admin does
    bot = _walker(study, "after")
    while not (references := re.findall(r'<img src="([^"]+)" alt="Reference image', bot.current()[0])):
        bot.answer()  # to the first page of a question that shows references
    assert len(references) == 1
    served = Image.open(io.BytesIO(bot.client.get(references[0]).content))
    assert served.getpixel((0, 0)) == colour


@pytest.mark.django_db
def test_later_pages_read_no_trial_question_or_session_rows(study):
    bot = _walker(study, "steady")
    bot.answer()  # instructions; the first question page follows
    with CaptureQueriesContext(connection) as captured:
        bot.current()
        bot.answer()
    tables = " ".join(query["sql"] for query in captured.captured_queries)
    assert "studies_trial" not in tables and "studies_question" not in tables
    # A Prolific participant is found by their id: their pages neither read nor write the browser session.
    assert "django_session" not in tables


@pytest.mark.django_db
def test_an_image_fetched_again_with_its_etag_is_not_sent_again(study):
    bot = _walker(study, "etag")
    bot.answer()
    html, _ = bot.current()
    src = re.findall(r'<img src="([^"]+)"', html)[0]
    first = bot.client.get(src)
    assert first.status_code == 200 and first.content.startswith(b"\x89PNG")
    again = bot.client.get(src, HTTP_IF_NONE_MATCH=first["ETag"])
    assert again.status_code == 304 and again.content == b""
    assert bot.client.get(src, HTTP_IF_NONE_MATCH='"other"').content == first.content


@pytest.mark.django_db
def test_an_etag_does_not_open_a_token_that_names_nothing(study):
    bot = _walker(study, "forged")
    forged = bot.url + "m/" + "0" * 32 + ".png"
    assert bot.client.get(forged, HTTP_IF_NONE_MATCH='"' + "0" * 32 + '"').status_code == 404
