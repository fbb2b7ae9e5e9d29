"""Adaptive pairs for studies of three or more arms: which trials the next participant sees.

With a preregistered stopping rule that asks for it (`adaptive: true`), each participant compares every
prompt once, in one pair of arms drawn by `Study.pair_weights` (set by analysis.stopping from finished
participants only, with a floor of uniform exploration); sides and order stay counterbalanced by the caller.
Without weights yet, every pair is equally likely.
"""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import Protocol


class PairTrial(Protocol):
    """What allocation needs of a trial."""

    prompt_id: int
    arm_a: str
    arm_b: str


def pair_key(arm_a: str, arm_b: str) -> str:
    """The key of an arm pair in `Study.pair_weights` ("lora|ti"): the two names sorted, joined by "|"."""
    return "|".join(sorted((arm_a, arm_b)))


def allocate_trials(
    trials: Sequence[PairTrial], weights: Mapping[str, float], rng: random.Random
) -> list[PairTrial]:
    """One trial per prompt, its pair drawn with probability proportional to the pair's weight.

    Pairs missing from `weights` (or all weights zero) fall back to equal chances, so a new pair or a study
    without weights yet is still shown.
    """
    by_prompt: dict[int, list[PairTrial]] = defaultdict(list)
    for trial in trials:
        by_prompt[trial.prompt_id].append(trial)
    chosen = []
    for prompt in sorted(by_prompt):
        group = by_prompt[prompt]
        per_pair = defaultdict(int)
        for trial in group:
            per_pair[pair_key(trial.arm_a, trial.arm_b)] += 1
        # A pair with several trials of one prompt (several seeds) shares its weight among them.
        chances = [
            weights.get(pair_key(t.arm_a, t.arm_b), 0.0) / per_pair[pair_key(t.arm_a, t.arm_b)] for t in group
        ]
        if sum(chances) <= 0:
            chances = [1.0] * len(group)
        chosen.append(rng.choices(group, weights=chances)[0])
    return chosen
