"""Benchmark: anytime-valid results under continuous monitoring, stopping early, and adaptive pairs, by simulation.

Participants differ in taste: each one's own chance of preferring the first arm of a pair is drawn from a Beta
with the pair's mean and concentration 4 (intra-participant correlation 0.2); in the two-arm designs each
casts 1 to 20 votes (uniform), and the unit is the participant's share of them. Prints:

1. false-positive rate when the researcher looks after every participant (from the 10th to the last) and
   stops at the first "significant" look: the anytime-valid test (e-value >= 1/alpha) against the fixed-n
   headline test (the report's participant-level GEE test) misused the same way;
2. participants to a decision at true participant-level preferences of 0.6, 0.65 and 0.75 (mean and 90th
   percentile, the anytime test stopping at the first participant where it rejects, at most --max-participants),
   against the fixed-n design with the same power (smallest n whose headline test has that power);
3. a 4-arm study (6 pairs, log-strengths 0.9, 0.45, 0, -0.45; each participant sees 6 prompts, one pair
   each): participants until every pair is decided (e-Holm over the 6 rows) with adaptive allocation
   (analysis.stopping's weights, recomputed every 10 finished participants, as a study whose next
   participants start while others are still answering) against uniform allocation, and the false-positive
   rate (any pair decided) under adaptive allocation when all four arms are equal.
Run:
    .venv/bin/python benchmarks/sequential.py [--paths 1000] [--arm-paths 40] [--null-paths 200] [--seed 0]
"""

from __future__ import annotations

import argparse
import itertools
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from analysis.stats import clustered_share_tests  # noqa: E402
from analysis.stats.sequential import (  # noqa: E402
    EXPLORATION_FLOOR,
    allocation_weights,
    anytime_rows,
    e_process,
)

ALPHA = 0.05
CONCENTRATION = 4.0
FIRST_LOOK = 10
PREFERENCES = (0.6, 0.65, 0.75)
LOG_STRENGTHS = np.array([0.9, 0.45, 0.0, -0.45])
PROMPTS = 6
BATCH = 10
# The 4-arm studies' confidence sequences (which only steer the allocation) on a 1/200 grid, five times
# faster than the report's 1/1000; decisions come from the e-values, which use no grid.
ARM_GRID = 200


def two_arm_study(rng: np.random.Generator, paths: int, n: int, mean: float) -> tuple[np.ndarray, np.ndarray]:
    """Wins and votes (paths x participants) for one pair: own preference ~ Beta, 1 to 20 votes each."""
    preference = rng.beta(CONCENTRATION * mean, CONCENTRATION * (1 - mean), (paths, n))
    votes = rng.integers(1, 21, (paths, n)).astype(float)
    return rng.binomial(votes.astype(int), preference).astype(float), votes


def headline_p(wins: np.ndarray, votes: np.ndarray) -> np.ndarray:
    """The report's fixed-n headline test on each path's participants (rows), all paths in one pass."""
    paths, n = wins.shape
    group = np.repeat(np.arange(paths), n)
    return clustered_share_tests(group, wins.ravel(), votes.ravel(), paths).p_value


def false_positives(rng: np.random.Generator, paths: int, n: int) -> tuple[float, float, float]:
    """Share of null paths ever rejected when looking after every participant: anytime, fixed-n, fixed-n once."""
    wins, votes = two_arm_study(rng, paths, n, 0.5)
    anytime = (e_process(wins / votes, ALPHA)[:, FIRST_LOOK - 1 :] >= 1 / ALPHA).any(axis=1)
    peeked = np.zeros(paths, bool)
    for look in range(FIRST_LOOK, n + 1):
        peeked |= headline_p(wins[:, :look], votes[:, :look]) < ALPHA
    once = headline_p(wins, votes) < ALPHA
    return float(anytime.mean()), float(peeked.mean()), float(once.mean())


def fixed_n_for_power(rng: np.random.Generator, paths: int, mean: float, power: float, most: int) -> int:
    """Smallest n at which the fixed-n headline test rejects on `power` of the paths (same paths for every n)."""
    wins, votes = two_arm_study(rng, paths, most, mean)

    def rate(n: int) -> float:
        return float((headline_p(wins[:, :n], votes[:, :n]) < ALPHA).mean())

    low, high = 2, most
    if rate(high) < power:
        return most
    while low < high:  # the rejection rate grows with n (nearly monotone on shared paths): bisect
        middle = (low + high) // 2
        low, high = (middle + 1, high) if rate(middle) < power else (low, middle)
    return low


def time_to_decision(
    rng: np.random.Generator, paths: int, mean: float, most: int
) -> tuple[np.ndarray, float]:
    """Participants at which the anytime test first rejects (most + 1 if never), and its power within `most`."""
    wins, votes = two_arm_study(rng, paths, most, mean)
    crossed = e_process(wins / votes, ALPHA) >= 1 / ALPHA
    decided = crossed.any(axis=1)
    return np.where(decided, crossed.argmax(axis=1) + 1, most + 1), float(decided.mean())


def four_arm_study(
    rng: np.random.Generator, strengths: np.ndarray, adaptive: bool, most: int
) -> tuple[int | None, bool]:
    """Run one 4-arm study participant by participant: (participants when every pair was decided, any decided)."""
    pairs = list(itertools.combinations(range(len(strengths)), 2))
    names = [(str(a), str(b)) for a, b in pairs]
    means = np.array([1 / (1 + np.exp(strengths[b] - strengths[a])) for a, b in pairs])
    weights = np.full(len(pairs), 1 / len(pairs))
    looks: list[list[int]] = [[] for _ in pairs]
    shares: list[list[float]] = [[] for _ in pairs]
    rows = []
    for participant in range(1, most + 1):
        votes = np.bincount(rng.choice(len(pairs), PROMPTS, p=weights), minlength=len(pairs))
        preference = rng.beta(CONCENTRATION * means, CONCENTRATION * (1 - means))
        for k in np.flatnonzero(votes):
            looks[k].append(participant)
            shares[k].append(rng.binomial(votes[k], preference[k]) / votes[k])
        # Uniform allocation needs no look before the end: decided_at already says when each row decided.
        if participant % (BATCH if adaptive else most) and participant < most:
            continue
        rows = anytime_rows(
            [np.array(at) for at in looks], [np.array(x) for x in shares], participant, ALPHA, grid=ARM_GRID
        )
        decided = [row.decided_at for row in rows]
        if all(at is not None for at in decided):
            return max(decided), True
        if adaptive:
            # Only participants who have finished count: the next batch starts from these weights.
            by_key = {("q", *name): row for name, row in zip(names, rows, strict=True)}
            chosen = allocation_weights(by_key, names)
            weights = np.array([chosen[name] for name in names])
    return None, any(row.decided_at is not None for row in rows)


def main() -> None:
    """Simulate every scenario and print the tables."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--paths", type=int, default=1000, help="Simulated studies per two-arm scenario.")
    parser.add_argument("--arm-paths", type=int, default=40, help="Simulated 4-arm studies per allocation.")
    parser.add_argument(
        "--null-paths", type=int, default=200, help="Simulated 4-arm studies with equal arms (adaptive)."
    )
    parser.add_argument("--participants", type=int, default=200, help="Participants per null study (1).")
    parser.add_argument("--max-participants", type=int, default=400, help="Cap of the anytime design (2).")
    parser.add_argument("--arm-max", type=int, default=600, help="Cap of the 4-arm studies (3).")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    start = time.perf_counter()

    anytime, peeked, once = false_positives(rng, args.paths, args.participants)
    print(
        f"1. False positives, looking after every participant ({FIRST_LOOK} to {args.participants}), "
        f"{args.paths} null studies, alpha {ALPHA}"
    )
    print(f"   anytime-valid (e-value >= {1 / ALPHA:g}):   {anytime:6.1%}")
    print(f"   fixed-n headline test, peeking:  {peeked:6.1%}")
    print(f"   fixed-n headline test, one look at {args.participants}: {once:6.1%}")

    print(
        f"\n2. Participants to a decision ({args.paths} studies each; anytime capped at {args.max_participants})"
    )
    print(
        "   preference  power  anytime mean  anytime p90  fixed-n (same power)  saving (mean)  saving (p90)"
    )
    for mean in PREFERENCES:
        needed, power = time_to_decision(rng, args.paths, mean, args.max_participants)
        stopped = np.minimum(needed, args.max_participants)
        fixed = fixed_n_for_power(rng, args.paths, mean, min(power, 0.99), args.max_participants * 2)
        average, p90 = float(stopped.mean()), float(np.percentile(stopped, 90))
        print(
            f"   {mean:10.2f}  {power:5.1%}  {average:12.1f}  {p90:11.0f}  {fixed:20d}"
            f"  {1 - average / fixed:13.0%}  {1 - p90 / fixed:12.0%}"
        )

    print(
        f"\n3. Four arms, 6 pairs, {PROMPTS} prompts per participant ({args.arm_paths} studies each, "
        f"capped at {args.arm_max}; adaptive weights every {BATCH} finished participants, "
        f"{EXPLORATION_FLOOR:.0%} uniform floor)"
    )
    for adaptive in (False, True):
        results = [four_arm_study(rng, LOG_STRENGTHS, adaptive, args.arm_max) for _ in range(args.arm_paths)]
        needed = np.array([at if at is not None else args.arm_max for at, _ in results], float)
        done = np.mean([at is not None for at, _ in results])
        print(
            f"   {'adaptive' if adaptive else 'uniform ':8}  every pair decided in {done:5.1%}: mean "
            f"{needed.mean():6.1f}, p90 {np.percentile(needed, 90):5.0f} participants"
        )
    null = [four_arm_study(rng, np.zeros(4), True, args.participants)[1] for _ in range(args.null_paths)]
    print(
        f"   adaptive, all arms equal: any pair decided (family-wise false positives) in {np.mean(null):5.1%}"
        f" of {args.null_paths} studies of {args.participants} participants"
    )
    print(f"\n({time.perf_counter() - start:.0f} s)")


if __name__ == "__main__":
    main()
