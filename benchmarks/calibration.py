"""Benchmark: calibration of the headline test, its share interval and Bradley-Terry intervals, by simulation.

Participants differ in taste. Two arms: each participant's own chance of preferring arm a is drawn from
Beta(2, 2) under the null (mean 1/2, intra-participant correlation 0.2) and from Beta(2.6, 1.4) under a true
65 % preference (ICC 0.2 too); each casts their votes independently with that chance. Designs give each
participant's number of votes (few participants, lopsided votes), and may have everyone share one taste
(ICC 0) or a share of votes that are ties, counted as half a vote for each arm. Three arms (Bradley-Terry):
log-strengths (0.5, 0, -0.5) plus a N(0, 0.5^2) taste per participant and arm; votes cycle over the three
pairs. The Bradley-Terry truth is the fit to 100,000 simulated participants of the same design.

Prints per design: the headline test's false-positive rate at alpha = 0.05 (and, for contrast, that of an
exact binomial test that counts votes as independent), the coverage of its 95 % share interval under the
null and under a 65 % preference, its power there, and the coverage of the 95 % Bradley-Terry intervals
(and, for contrast, of plain percentile bootstrap intervals). Run:
    .venv/bin/python benchmarks/calibration.py [--studies 1000] [--bt-studies N] [--resamples 200]
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from analysis.stats import bradley_terry, clustered_share_tests, not_estimable  # noqa: E402
from analysis.stats.bradley_terry import (  # noqa: E402
    MIN_PARTICIPANTS_FOR_INTERVALS,
    bootstrap_intervals,
    bootstrap_strengths,
)
from analysis.stats.inference import binomial_p_values  # noqa: E402

ALPHA = 0.05
TASTES = {"null": (2.0, 2.0), "power": (2.6, 1.4)}
LOG_STRENGTHS = np.array([0.5, 0.0, -0.5])
TASTE_SD = 0.5
PAIRS = np.array([[0, 1], [0, 2], [1, 2]])


@dataclass(frozen=True)
class Design:
    """Votes per participant (one entry each), whether all share one taste, and the share of tie votes."""

    name: str
    votes: tuple[int, ...]
    same_taste: bool = False
    ties: float = 0.0

    @classmethod
    def of(cls, *blocks: tuple[int, int], same_taste: bool = False, ties: float = 0.0) -> Design:
        """A design from (participants, votes each) blocks, named like '3x2+3x40'."""
        name = "+".join(f"{n}x{m}" for n, m in blocks) + (" same taste" if same_taste else "")
        name += f" {ties:.0%} ties as half" if ties else ""
        return cls(name, tuple(m for n, m in blocks for _ in range(n)), same_taste, ties)


DESIGNS = (
    Design.of((10, 10)),
    Design.of((12, 10)),
    Design.of((30, 10)),
    Design.of((50, 1)),
    Design.of((200, 20)),
    Design.of((3, 30)),
    Design.of((5, 20)),
    Design.of((3, 2), (3, 40)),
    Design.of((9, 2), (1, 60)),
    Design.of((15, 1), (5, 30)),
    Design.of((8, 30), same_taste=True),
    Design.of((40, 1), ties=0.3),
)


def simulate_tallies(
    design: Design, taste: tuple[float, float], studies: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, float]:
    """Rows (study, wins, votes, squared outcomes) of `studies` simulated studies, and the true share."""
    votes = np.tile(np.array(design.votes, dtype=np.int64), studies)
    group = np.repeat(np.arange(studies), len(design.votes))
    mean = taste[0] / sum(taste)
    chance = np.full(votes.shape, mean) if design.same_taste else rng.beta(*taste, votes.shape)
    ties = rng.binomial(votes, design.ties)
    decisive = rng.binomial(votes - ties, chance).astype(float)
    wins, squared = decisive + ties / 2, decisive + ties / 4
    return group, wins, votes.astype(float), squared, design.ties / 2 + (1 - design.ties) * mean


def headline_rates(design: Design, studies: int, rng: np.random.Generator) -> dict[str, float | str]:
    """Rejection rates and interval coverage of the headline test (null and 65 %), and of the
    vote-counting binomial test (null)."""
    out: dict[str, float | str] = {}
    for name, taste in TASTES.items():
        group, wins, votes, squared, truth = simulate_tallies(design, taste, studies, rng)
        result = clustered_share_tests(group, wins, votes, studies, wins_squared=squared)
        out[name] = float((result.p_value < ALPHA).mean())
        out[f"coverage_{name}"] = float(((result.ci_low <= truth) & (truth <= result.ci_high)).mean())
        if name == "null":
            total = np.bincount(group, weights=wins), np.bincount(group, weights=votes)
            out["naive"] = float((binomial_p_values(*total) < ALPHA).mean())
            methods, counts = np.unique(result.method, return_counts=True)
            out["method"] = str(methods[np.argmax(counts)])
    return out


def simulate_wins(participants: int, votes: int, rng: np.random.Generator) -> np.ndarray:
    """Per-participant win matrices [participant, i, j] of one simulated three-arm study."""
    theta = LOG_STRENGTHS + rng.normal(0, TASTE_SD, (participants, 3))
    pair = PAIRS[(rng.integers(0, 3, (participants, 1)) + np.arange(votes)) % 3]  # cycle from a random pair
    i, j = pair[..., 0], pair[..., 1]
    rows = np.arange(participants)[:, None]
    i_wins = rng.random((participants, votes)) < 1 / (1 + np.exp(theta[rows, j] - theta[rows, i]))
    winner, loser = np.where(i_wins, i, j), np.where(i_wins, j, i)
    wins = np.zeros((participants, 3, 3))
    np.add.at(wins, (np.broadcast_to(rows, winner.shape), winner, loser), 1)
    return wins


def bradley_terry_coverage(
    participants: int, votes: int, studies: int, resamples: int, rng: np.random.Generator
) -> tuple[float, float, float]:
    """Coverage of the 95 % intervals of every arm (the report's, and plain percentile ones for contrast),
    and the share of studies that were not estimable."""
    truth = bradley_terry(simulate_wins(100_000, votes, rng).sum(axis=0))
    covered, percentile, counted, skipped = 0, 0, 0, 0
    for _ in range(studies):
        per_participant = simulate_wins(participants, votes, rng)
        total = per_participant.sum(axis=0)
        if not_estimable(total, ["a", "b", "c"], participants):
            skipped += 1
            continue
        samples = bootstrap_strengths(per_participant, resamples, rng)
        low, high = bootstrap_intervals(samples, bradley_terry(total), participants, 0.95)
        covered += int(((low <= truth) & (truth <= high)).sum())
        low, high = np.nanpercentile(samples, [2.5, 97.5], axis=0)
        percentile += int(((low <= truth) & (truth <= high)).sum())
        counted += 3
    return covered / max(counted, 1), percentile / max(counted, 1), skipped / studies


def main() -> None:
    """Simulate every design and print one line each."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--studies", type=int, default=1000, help="Simulated studies per design and scenario."
    )
    parser.add_argument(
        "--resamples", type=int, default=200, help="Bootstrap resamples per Bradley-Terry study."
    )
    parser.add_argument(
        "--bt-studies", type=int, help="Simulated studies per Bradley-Terry design (default: --studies)."
    )
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    bt_studies = args.bt_studies or args.studies
    print(
        f"{args.studies} studies per design; alpha = {ALPHA}; "
        f"Bradley-Terry: {bt_studies} studies, {args.resamples} resamples"
    )
    print(
        f"{'design':<24}  false-pos  (votes as independent)  coverage null  coverage 65%  power@65%"
        "  BT coverage  (percentile)  BT not estimable  headline method"
    )
    for design in DESIGNS:
        start = time.perf_counter()
        rates = headline_rates(design, args.studies, rng)
        votes = set(design.votes)
        # Bradley-Terry: for the plain designs (equal votes, varied taste, no ties) with intervals.
        plain = len(votes) == 1 and not design.same_taste and not design.ties
        bradley = (
            bradley_terry_coverage(len(design.votes), votes.pop(), bt_studies, args.resamples, rng)
            if plain and len(design.votes) >= MIN_PARTICIPANTS_FOR_INTERVALS
            else None
        )
        coverage, percentile, skipped = (f"{x:.1%}" for x in bradley) if bradley else ("-",) * 3
        print(
            f"{design.name:<24}  {rates['null']:>8.1%}  {rates['naive']:>22.1%}  {rates['coverage_null']:>13.1%}"
            f"  {rates['coverage_power']:>12.1%}  {rates['power']:>9.1%}"
            f"  {coverage:>11}  {percentile:>12}  {skipped:>16}  {rates['method']}"
            f"  ({time.perf_counter() - start:.0f} s)"
        )


if __name__ == "__main__":
    main()
