"""Service behaviour the demo and the admin rely on."""

import pytest
from django.db.models import RestrictedError

from studies.models import Response, Study
from studies.services import study_create_from_generation

from .conftest import Bot, choose_attentively

pytestmark = pytest.mark.django_db


def test_studies_created_twice_without_a_slug_get_distinct_slugs(run):
    first = study_create_from_generation(run=run, status=Study.Status.OPEN)
    second = study_create_from_generation(run=run, status=Study.Status.OPEN)
    assert (first.slug, second.slug) == ("which-image-do-you-prefer", "which-image-do-you-prefer-2")
    assert first.arms == run.arms and first.trials.filter(is_attention_check=False).count() == 2 * 3


def test_answered_trials_cannot_be_deleted_but_the_study_can(study):
    bot = Bot(study)
    bot.consent()
    bot.finish(choose_attentively)
    with pytest.raises(RestrictedError):
        Response.objects.first().trial.delete()
    study.delete()
    assert not Response.objects.exists()
