"""Adaptive pairs for three or more arms: weights from finished participants, one pair per prompt, sides kept balanced."""

import random
from collections import Counter
from dataclasses import dataclass

import pytest
from django.test import TestCase

from analysis.stats.sequential import EXPLORATION_FLOOR, Anytime, allocation_weights
from analysis.stopping import study_stopping_apply
from studies.allocation import allocate_trials, pair_key
from studies.models import Participant, Study
from studies.services import ExternalIds, participant_answer_all, participant_pages, participant_start

PAIRS = [("base", "lora"), ("base", "ti"), ("lora", "ti")]


@dataclass
class FakeTrial:
    prompt_id: int
    arm_a: str
    arm_b: str


def test_allocation_draws_one_trial_per_prompt_with_the_pairs_weights():
    trials = [FakeTrial(prompt, a, b) for prompt in range(3) for a, b in PAIRS]
    rng = random.Random(0)
    only = allocate_trials(trials, {"base|lora": 0.0, "base|ti": 0.0, "lora|ti": 1.0}, rng)
    assert [(t.prompt_id, t.arm_a, t.arm_b) for t in only] == [(p, "lora", "ti") for p in range(3)]
    # No weights yet: every pair equally likely.
    counts = Counter(
        pair_key(t.arm_a, t.arm_b) for _ in range(3000) for t in allocate_trials(trials, {}, rng)
    )
    assert all(abs(count / 9000 - 1 / 3) < 0.03 for count in counts.values()) and len(counts) == 3
    weighted = Counter(
        pair_key(t.arm_a, t.arm_b)
        for _ in range(3000)
        for t in allocate_trials(trials, {"base|lora": 0.6, "base|ti": 0.2, "lora|ti": 0.2}, rng)
    )
    assert abs(weighted["base|lora"] / 9000 - 0.6) < 0.03


def test_weights_favour_the_pair_whose_widest_open_sequence_one_more_participant_narrows_most():
    rows = {
        ("q", "base", "lora"): Anytime(
            participants=10, cs_low=0.2, cs_high=0.8, e_value=1.0, decided_at=None
        ),
        ("q", "base", "ti"): Anytime(participants=10, cs_low=0.4, cs_high=0.6, e_value=1.0, decided_at=None),
        ("q", "lora", "ti"): Anytime(participants=10, cs_low=0.7, cs_high=0.9, e_value=50.0, decided_at=8),
    }
    weights = allocation_weights(rows, PAIRS, 0.2)
    assert sum(weights.values()) == pytest.approx(1.0)
    # Decided: only the uniform floor. Open: the rest in proportion to width 0.6 vs 0.2 (same n).
    assert weights[("lora", "ti")] == pytest.approx(0.2 / 3)
    assert weights[("base", "lora")] == pytest.approx(0.2 / 3 + 0.8 * 0.75)
    assert weights[("base", "ti")] == pytest.approx(0.2 / 3 + 0.8 * 0.25)
    # A pair nobody has compared yet has width 1 at n = 0: the largest gain of all.
    fresh = allocation_weights({k: v for k, v in rows.items() if k[1:] != ("base", "ti")}, PAIRS, 0.2)
    assert max(fresh, key=fresh.get) == ("base", "ti")


def _adaptive(study: Study) -> Study:
    study.plan = {
        "stopping": {"rule": "anytime", "min_participants": 50, "max_participants": 100, "adaptive": True}
    }
    study.save(update_fields=["plan"])
    return study


def _lora_wins(participant, page) -> str:
    if page.question is None:
        return page.trial.expected_choice
    shown = participant.shown(page.trial)
    return (
        "left"
        if shown.left_arm == "lora" or (shown.right_arm != "lora" and shown.left_arm == "ti")
        else "right"
    )


def test_an_adaptive_study_shows_each_prompt_once_in_a_drawn_pair_with_sides_balanced(study):
    _adaptive(study)
    participant = participant_start(study=study, ids=ExternalIds(), consent_given=True)
    regular = [pk for pk in participant.trial_order if not study.trials.get(pk=pk).is_attention_check]
    trials = [study.trials.get(pk=pk) for pk in regular]
    assert sorted(t.prompt_id for t in trials) == sorted(
        set(study.trials.filter(is_attention_check=False).values_list("prompt_id", flat=True))
    )
    # Two trials: each arm shown is on the left in at most one more trial than on the right.
    lefts = Counter(participant.sides[str(t.pk)] for t in trials)
    shown = Counter(arm for t in trials for arm in (t.arm_a, t.arm_b))
    assert all(abs(2 * lefts[arm] - count) <= 1 for arm, count in shown.items())
    questions = study.questions.count()
    assert (
        len([p for p in participant_pages(participant=participant) if p.kind == "question"])
        == 2 * questions + 2
    )


def test_pair_weights_are_computed_from_finished_participants_only(study):
    _adaptive(study)
    for number in range(4):
        with TestCase.captureOnCommitCallbacks(execute=True):
            participant = participant_start(
                study=study, ids=ExternalIds(external_id=f"w{number}", source="prolific"), consent_given=True
            )
            participant_answer_all(participant=participant, choose=_lora_wins)
    weights = Study.objects.get(pk=study.pk).pair_weights
    assert set(weights) == {"base|lora", "base|ti", "lora|ti"}
    assert sum(weights.values()) == pytest.approx(1.0)
    assert min(weights.values()) >= EXPLORATION_FLOOR / 3 - 1e-12
    # Someone answers every question but has not finished: the weights do not move.
    walker = participant_start(
        study=study, ids=ExternalIds(external_id="walker", source="prolific"), consent_given=True
    )
    pages = participant_pages(participant=walker)
    participant_answer_all(participant=walker, choose=_lora_wins)  # finishes: undo the finish below
    Participant.objects.filter(pk=walker.pk).update(finished_at=None, position=len(pages) - 2)
    study_stopping_apply(study=Study.objects.get(pk=study.pk))
    assert Study.objects.get(pk=study.pk).pair_weights == weights
