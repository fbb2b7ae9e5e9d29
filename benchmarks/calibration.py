"""Benchmark: calibration of the headline test and Bradley-Terry intervals, by simulation.

Participants differ in taste. Two arms: each participant's own chance of preferring arm a is drawn from
Beta(2, 2) under the null (mean 1/2, intra-participant correlation 0.2) and from Beta(2.6, 1.4) under a true
65 % preference; each casts `votes` independent votes with that chance. Three arms (Bradley-Terry): log-
strengths (0.5, 0, -0.5) plus a N(0, 0.5^2) taste per participant and arm; votes cycle over the three pairs.
The Bradley-Terry truth is the fit to 100,000 simulated participants of the same design.

Prints per design: the headline test's false-positive rate at alpha = 0.05 (and, for contrast, that of an
exact binomial test that counts votes as independent), its power at 65 %, and the coverage of the 95 %
Bradley-Terry intervals (and, for contrast, of plain percentile bootstrap intervals). Run:
    .venv/bin/python benchmarks/calibration.py [--studies 1000] [--resamples 200]
"""

from __future__ import annotations

import argparse
import sys
import time
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

DESIGNS = ((10, 10), (12, 10), (30, 10), (50, 1), (200, 20))
ALPHA = 0.05
LOG_STRENGTHS = np.array([0.5, 0.0, -0.5])
TASTE_SD = 0.5
PAIRS = np.array([[0, 1], [0, 2], [1, 2]])


def headline_rates(participants: int, votes: int, studies: int, rng: np.random.Generator) -> dict[str, float]:
    """Rejection rates of the headline test (null and 65 %) and of the vote-counting binomial test (null)."""
    out = {}
    for name, (a, b) in {"null": (2.0, 2.0), "power": (2.6, 1.4)}.items():
        wins = rng.binomial(votes, rng.beta(a, b, (studies, participants))).astype(float)
        group = np.repeat(np.arange(studies), participants)
        result = clustered_share_tests(group, wins.ravel(), np.full(wins.size, float(votes)), studies)
        out[name] = float((result.p_value < ALPHA).mean())
        if name == "null":
            out["naive"] = float((binomial_p_values(wins.sum(axis=1), participants * votes) < ALPHA).mean())
            out["method"] = str(result.method[0])
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
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    print(f"{args.studies} studies per design; alpha = {ALPHA}; Bradley-Terry: {args.resamples} resamples")
    print(
        "design    false-pos  (votes as independent)  power@65%  BT coverage  (percentile)  BT not estimable"
        "  headline method"
    )
    for participants, votes in DESIGNS:
        start = time.perf_counter()
        rates = headline_rates(participants, votes, args.studies, rng)
        coverage, percentile, skipped = (
            bradley_terry_coverage(participants, votes, args.studies, args.resamples, rng)
            if participants >= MIN_PARTICIPANTS_FOR_INTERVALS
            else (float("nan"),) * 3
        )
        print(
            f"{participants:>3} x {votes:<3}  {rates['null']:>8.1%}  {rates['naive']:>22.1%}  {rates['power']:>9.1%}"
            f"  {coverage:>11.1%}  {percentile:>12.1%}  {skipped:>16.1%}  {rates['method']}"
            f"  ({time.perf_counter() - start:.0f} s)"
        )


if __name__ == "__main__":
    main()
