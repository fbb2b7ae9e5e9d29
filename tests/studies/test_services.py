"""Service behaviour the demo and the admin rely on."""

import itertools
from unittest import mock

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


@pytest.mark.parametrize("checks", [1, 2, 3, 4])
def test_attention_checks_ask_for_both_sides_equally_in_an_order_drawn_per_study(run, checks):
    orders = set()
    # Each study's random secret decides the order: fixed secrets make the test deterministic.
    secrets = (f"{number:064x}" for number in itertools.count())
    with mock.patch("studies.models.secrets.token_hex", side_effect=lambda nbytes: next(secrets)[: 2 * nbytes]):
        for number in range(12):
            study = study_create_from_generation(run=run, slug=f"checks-{number}", attention_checks=checks)
            trials = study.trials.filter(is_attention_check=True).order_by("position")
            sides = list(trials.values_list("expected_choice", flat=True))
            assert abs(sides.count("left") - sides.count("right")) == checks % 2
            orders.add(tuple(sides))
    assert len(orders) > 1  # drawn per study, not one fixed order (the old rule always asked "left" first)
