"""The preregistered analysis plan as canonical JSON and its SHA-256 (pure, no Django).

The hashed bytes are the exported file's bytes, so `sha256sum plan.json` reproduces the printed hash (an OSF
reviewer can check it without peftlab).
"""

from __future__ import annotations

import hashlib
import itertools
import json
from typing import Any

from analysis.stats.inference import EXACT, GEE, SIGN
from analysis.stats.report import AnalysisConfig
from peftlab.errors import UserInputError

PLAN_FORMAT = "peftlab-analysis-plan/1"


def analysis_plan(
    *,
    study: dict[str, Any],
    arms: list[str],
    questions: list[dict[str, Any]],
    attention_checks: int,
    target_participants: int,
    max_participants: int | None,
    config: AnalysisConfig,
    alpha: float = 0.05,
    stopping: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The plan: headline questions x pairs, the test and alpha, exclusion rules, target and stopping rule."""
    if not 0 < alpha < 1:
        raise UserInputError(f"alpha must be in (0, 1), got {alpha}; e.g. 0.05")
    if len(arms) < 2 or not questions:
        raise UserInputError("a plan needs two or more arms and at least one question; build the study first")
    # The analysis orders each pair by arm name (the first arm is the one whose share is tested).
    pairs = list(itertools.combinations(sorted(arms), 2))
    return {
        "format": PLAN_FORMAT,
        "study": study,
        "arms": list(arms),
        "questions": questions,
        "headline": [
            {"question": question["key"], "arm_a": arm_a, "arm_b": arm_b}
            for question in questions
            for arm_a, arm_b in pairs
        ],
        "test": {
            "hypothesis": "the first arm's share of decisive votes differs from 0.5 (two-sided)",
            "unit": "participant",
            "one_vote_per_participant": EXACT,
            "several_votes_per_participant": GEE,
            "no_spread_fallback": SIGN,
            "ties": "half a vote per arm" if config.ties_as_half else "excluded",
            "confidence": config.confidence,
        },
        "alpha": alpha,
        "multiplicity": "Holm over the headline family (every question x pair above); all else exploratory",
        "exclusions": {
            "failed_attention_check": "excluded" if config.exclude_failed_attention else "kept",
            "attention_checks": attention_checks,
            "trials_showing_one_arm_twice": "dropped",
            "pilot_participants": "not analysed",
        },
        "bradley_terry": {"bootstrap": config.bootstrap, "seed": config.seed} if len(arms) >= 3 else None,
        "target_participants": target_participants,
        "max_participants": max_participants,
        "stopping": stopping,
    }


def plan_bytes(plan: dict[str, Any]) -> bytes:
    """The plan's canonical bytes (sorted keys, no spaces, UTF-8, a final newline): what is hashed and exported."""
    return (json.dumps(plan, sort_keys=True, separators=(",", ":"), ensure_ascii=False) + "\n").encode()


def plan_sha256(plan: dict[str, Any]) -> str:
    """The SHA-256 of the plan's canonical bytes, in hex."""
    return hashlib.sha256(plan_bytes(plan)).hexdigest()
