"""Studies of any number of arms (the base model and up to six adapters): every pair per prompt, sides
balanced per participant, answered and analysed; more than seven arms refused."""

import itertools
from collections import Counter

import pytest
from django.core.files.base import ContentFile

from analysis.selectors import study_report
from analysis.stats import AnalysisConfig
from console.demo import simulate_participants
from generation.models import GeneratedImage, GenerationRun, Prompt, PromptSet
from peftlab.errors import UserInputError
from studies.models import Study
from studies.services import study_create_from_generation
from tests.studies.conftest import png_bytes

pytestmark = pytest.mark.django_db
FOUR = ["base", "dora", "loha", "oft"]


def run_with_arms(arms: list[str], landmarks: int = 2) -> GenerationRun:
    """A finished run of `arms`, one seed, each arm's images a colour of its own."""
    prompt_set = PromptSet.objects.create(name=f"set-{len(arms)}")
    run = GenerationRun.objects.create(
        name="n arms", status=GenerationRun.Status.FINISHED, prompt_set=prompt_set, arms=arms
    )
    for position in range(landmarks):
        prompt = Prompt.objects.create(
            prompt_set=prompt_set, position=position, landmark=f"L{position}", text=f"landmark {position}"
        )
        for number, arm in enumerate(arms):
            image = GeneratedImage(run=run, arm=arm, prompt=prompt, seed=0, rendered_prompt=prompt.text)
            color = (30 * number, 255 - 30 * number, 60)
            image.image.save("x.png", ContentFile(png_bytes(color, arm)), save=False)
            image.width = image.height = 16
            image.save()
    return run


def test_four_arm_study_pairs_balances_answers_and_ranks():
    study = study_create_from_generation(
        run=run_with_arms(FOUR), title="Pictures", slug="four", status=Study.Status.OPEN
    )
    regular = study.trials.filter(is_attention_check=False)
    # Every prompt shows each of the six pairs once.
    assert Counter((t.prompt.landmark, t.arm_a, t.arm_b) for t in regular) == {
        (landmark, a, b): 1 for landmark in ("L0", "L1") for a, b in itertools.combinations(FOUR, 2)
    }
    participants = simulate_participants(study=study, count=12, preferred_arm="dora", seed=3)
    for participant in participants:
        # Each arm is in six trials per participant and on the left in exactly three.
        left = Counter(participant.sides[str(trial.pk)] for trial in regular)
        assert left == dict.fromkeys(FOUR, 3), participant.sides
    report = study_report(study=study, config=AnalysisConfig(bootstrap=200))
    questions = {row.question for row in report.headline.rows}
    assert len(report.headline.rows) == 6 * len(questions)
    for question in questions:
        ranked = sorted(
            (r for r in report.bradley_terry.rows if r.question == question), key=lambda r: r.rank
        )
        assert sorted(row.arm for row in ranked) == sorted(FOUR)
        # Bradley-Terry strengths with participant-bootstrap intervals around them.
        assert all(row.ci_low <= row.strength <= row.ci_high for row in ranked)
    assert {r.arm for r in report.bradley_terry.rows if r.rank == 1} == {"dora"}


def test_more_than_seven_arms_are_refused_and_nothing_is_created():
    run = run_with_arms(["base", *(f"a{number}" for number in range(7))], landmarks=1)
    with pytest.raises(UserInputError) as error:
        study_create_from_generation(run=run, title="Too many", slug="eight")
    assert str(error.value) == "a study compares at most 7 arms (the base model and 6 adapters); got 8."
    assert not Study.objects.exists()
    seven = study_create_from_generation(run=run, arms=run.arms[:7], title="Seven", slug="seven")
    assert seven.trials.filter(is_attention_check=False).count() == 21
