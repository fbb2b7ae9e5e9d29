"""Anytime-valid inference for a mean in [0, 1]: betting confidence sequences and e-processes (pure numpy).

Waudby-Smith & Ramdas, "Estimating means of bounded random variables by betting" (JRSS-B 2024): for a
candidate mean m, the capital K_t(m) = theta * prod(1 + l+_i (x_i - m)) + (1 - theta) * prod(1 - l-_i (x_i - m))
is a nonnegative martingale with K_0 = 1 when the mean is m, whatever the distribution of x in [0, 1], as long
as each bet l_i is chosen before x_i is seen. By Ville's inequality P(sup_t K_t(m) >= 1/alpha) <= alpha, so
{m : K_t(m) < 1/alpha} is a confidence sequence (it covers the mean at every time at once) and K_t(1/2) is an
e-process against "no preference": looking after every participant and stopping whenever it is large is valid.
Bets are the paper's predictable plug-in ("predmix EB", eq. 26), truncated at 1/2 of the largest allowed
bet, exactly as confseq's `betting_cs(..., convex_comb=True)` computes them (tests compare with its numbers).

Several rows (one test per question and pair) are corrected together by closed testing with averaged
e-processes (e-Holm, Vovk & Wang 2021): the average of e-processes is an e-process for the intersection null.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

NULL_MEAN = 0.5
# The paper's and confseq's defaults: half the capital on each side, bets at most half the largest safe bet.
THETA = 0.5
TRUNCATION = 0.5
GRID = 1000
# Share of each participant's comparisons spread uniformly over the pairs whatever the weights say, so
# every pair keeps being compared (Chatbot Arena mixes uniform sampling in the same way).
EXPLORATION_FLOOR = 0.2


def predictable_bets(x: np.ndarray, alpha: float) -> np.ndarray:
    """Bet sizes lambda_t (before truncation), each a function of x_1..x_{t-1} only (WSR eq. 26).

    Along the last axis: a (paths, n) array gives every path's bets at once.
    """
    x = np.asarray(x, float)
    t = np.arange(1, x.shape[-1] + 1)
    # Regularised running mean and variance: one fake observation with mean 1/2 and variance 1/4.
    mean = np.minimum((0.5 + np.cumsum(x, axis=-1)) / (t + 1), 1)
    variance = (0.25 + np.cumsum((x - mean) ** 2, axis=-1)) / (t + 1)
    previous = np.concatenate([np.full((*x.shape[:-1], 1), 0.25), variance[..., :-1]], axis=-1)
    return np.sqrt(2 * math.log(1 / alpha) / (t * np.log1p(t) * previous))


def capital(x: np.ndarray, mean: np.ndarray | float, alpha: float) -> np.ndarray:
    """The hedged capital K_t(m) after each observation (last axis): the e-process against mean m.

    `mean` broadcasts against `x` (a column of candidate means against one sequence gives a grid).
    """
    x = np.asarray(x, float)
    mean = np.asarray(mean, float)
    # Each side bets as if it alone had to reach 1/(theta * alpha): the paper's alpha * theta in the bets.
    bets = predictable_bets(x, alpha * THETA)
    with np.errstate(divide="ignore"):
        up = np.minimum(bets, TRUNCATION / mean)
        down = np.minimum(bets, TRUNCATION / (1 - mean))
    # With truncation 1/2 every factor is at least 1/2: logs are finite and sums do not overflow.
    log_up = np.cumsum(np.log1p(up * (x - mean)), axis=-1)
    log_down = np.cumsum(np.log1p(-down * (x - mean)), axis=-1)
    with np.errstate(over="ignore"):
        return THETA * np.exp(log_up) + (1 - THETA) * np.exp(log_down)


def e_process(x: np.ndarray, alpha: float = 0.05) -> np.ndarray:
    """E-values against mean 1/2 after each observation (last axis), a test martingale under the null."""
    return capital(x, NULL_MEAN, alpha)


def confidence_sequence(
    x: np.ndarray, alpha: float = 0.05, grid: int = GRID
) -> tuple[np.ndarray, np.ndarray]:
    """Lower and upper ends of the (1 - alpha) confidence sequence after each observation (running intersection).

    The candidate means are a grid of step 1/grid; each end is widened by one step so the grid never
    excludes the true mean (confseq's convention).
    """
    x = np.asarray(x, float)
    if not len(x):
        return np.zeros(0), np.zeros(0)
    means = np.arange(grid + 1) / grid
    inside = np.empty((len(means), len(x)), bool)
    for start in range(0, len(means), 128):  # a few MB at a time, however long the sequence
        inside[start : start + 128] = capital(x, means[start : start + 128, None], alpha) <= 1 / alpha
    any_inside = inside.any(axis=0)
    first = np.where(any_inside, means[np.argmax(inside, axis=0)], 0.0)
    last = np.where(any_inside, means[len(means) - 1 - np.argmax(inside[::-1], axis=0)], 1.0)
    low = np.maximum(0.0, first - 1 / grid)
    high = np.minimum(1.0, last + 1 / grid)
    return np.maximum.accumulate(low), np.minimum.accumulate(high)


def e_holm(e_values: np.ndarray, alpha: float) -> np.ndarray:
    """Which hypotheses (rows) closed testing with averaged e-values rejects at level alpha, per column (look).

    Hypothesis k is rejected when every intersection containing it has a mean e-value >= 1/alpha; the
    smallest such mean is that of k with the s - 1 smallest others, for some size s.
    """
    e = np.asarray(e_values, float)
    rejected = np.zeros(e.shape, bool)
    sizes = np.arange(1, len(e) + 1).reshape(-1, *[1] * (e.ndim - 1))
    for k in range(len(e)):
        others = np.sort(np.delete(e, k, axis=0), axis=0)
        sums = e[k] + np.concatenate([np.zeros((1, *e.shape[1:])), np.cumsum(others, axis=0)])
        rejected[k] = (sums / sizes).min(axis=0) >= 1 / alpha
    return rejected


@dataclass(frozen=True)
class Anytime:
    """One row's anytime-valid result after its last participant.

    cs_low/cs_high: the confidence sequence for the mean share; e_value: the e-process against 1/2;
    decided_at: the number of participants (in finishing order) at which the corrected test first rejected
    1/2, or None; participants: how many participants the row has.
    """

    participants: int
    cs_low: float
    cs_high: float
    e_value: float
    decided_at: int | None


def anytime_rows(
    looks: list[np.ndarray], shares: list[np.ndarray], total: int, alpha: float, grid: int = GRID
) -> list[Anytime]:
    """Anytime results for rows observed at a common sequence of `total` looks (participants in finishing order).

    Row k has a share `shares[k][i]` at look `looks[k][i]` (1-based, increasing). The e-processes are
    corrected together (e-Holm at `alpha`); each confidence sequence is at 1 - alpha on its own (on a grid of
    step 1/grid).
    """
    paths = np.ones((len(shares), total + 1))
    for k, (at, x) in enumerate(zip(looks, shares, strict=True)):
        # Each row's e-process moves at its own participants and stays put in between.
        latest = np.zeros(total + 1, int)
        latest[at] = np.arange(1, len(x) + 1)
        paths[k] = np.append(1.0, e_process(x, alpha))[np.maximum.accumulate(latest)]
    decided = e_holm(paths, alpha)
    rows = []
    for k, x in enumerate(shares):
        low, high = confidence_sequence(x, alpha, grid) if len(x) else (np.zeros(1), np.ones(1))
        first = np.flatnonzero(decided[k])
        rows.append(
            Anytime(
                participants=len(x),
                cs_low=float(low[-1]),
                cs_high=float(high[-1]),
                e_value=float(paths[k, -1]),
                decided_at=int(first[0]) if len(first) else None,
            )
        )
    return rows


def allocation_weights(
    rows: dict[tuple[str, str, str], Anytime], pairs: list[tuple[str, str]], floor: float = EXPLORATION_FLOOR
) -> dict[tuple[str, str], float]:
    """Each arm pair's share of the next participants' comparisons: where one more participant helps most.

    A pair's score is how much one more participant would narrow its widest undecided confidence sequence
    (a width w from n participants shrinks about as 1/sqrt(n): by w * (1 - sqrt(n / (n + 1)))), the rule
    Chatbot Arena samples pairs by; a pair nobody has compared yet has width 1 and the top score. A share
    `floor` is spread uniformly (exploration); a pair whose rows are all decided gets only that.
    """
    scores = np.zeros(len(pairs))
    for index, pair in enumerate(pairs):
        compared = [row for key, row in rows.items() if key[1:] == tuple(pair)]
        scores[index] = max(
            (
                (row.cs_high - row.cs_low) * (1 - math.sqrt(row.participants / (row.participants + 1)))
                for row in compared
                if row.decided_at is None
            ),
            default=0.0 if compared else 1.0,
        )
    uniform = np.full(len(pairs), 1 / len(pairs))
    adaptive = scores / scores.sum() if scores.sum() > 0 else uniform
    weights = floor * uniform + (1 - floor) * adaptive
    return {pair: float(weight) for pair, weight in zip(pairs, weights, strict=True)}
