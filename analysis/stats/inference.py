"""Tests and intervals of a share against 1/2 with the participant as the unit (pure numpy/scipy/statsmodels).

`clustered_share_tests` takes one row per (group, participant) — the participant's wins and votes in that
group — and answers every group at once: the headline tests, the exploratory breakdowns, position bias and
the calibration benchmark's thousands of simulated studies all go through it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import stats
from statsmodels.stats.multitest import multipletests
from statsmodels.stats.proportion import proportion_confint

EXACT = "exact binomial (1 vote per participant)"
# The several-votes test (the name is historical; the Methods paragraph and preregistration key on it).
GEE = "t test over participants' own shares"
# The one-sided level of the ICC upper bound reported per row, which the planner plans from.
ICC_BOUND = 0.8
SIGN = "exact sign test over participants (no t test: all votes one way, or no spread)"


def wilson_intervals(count: object, n: object, confidence: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
    """Wilson score intervals of count/n (statsmodels' proportion_confint), vectorised; NaN where n is 0.

    0/n and n/n get bounds of exactly 0 and 1 (the formula leaves rounding dust such as 5.6e-17).
    """
    count, n = np.asarray(count, dtype=float), np.asarray(n, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        low, high = proportion_confint(count, np.where(n > 0, n, 1), alpha=1 - confidence, method="wilson")
    low = np.where(count <= 0, 0.0, np.clip(low, 0, 1))
    high = np.where(count >= n, 1.0, np.clip(high, 0, 1))
    return np.where(n > 0, low, np.nan), np.where(n > 0, high, np.nan)


def toward_half(count: object, n: object) -> tuple[np.ndarray, np.ndarray]:
    """Counts with half votes rounded towards n/2 (so neither the p-value nor the interval is optimistic)."""
    count, n = np.asarray(count, dtype=float), np.rint(np.asarray(n, dtype=float))
    return np.where(count > n / 2, np.floor(count), np.ceil(count)), n


def binomial_p_values(count: object, n: object) -> np.ndarray:
    """Exact two-sided binomial p-values against 0.5, vectorised; half votes are rounded towards n/2."""
    k, n = toward_half(count, n)
    # Under 0.5 the distribution is symmetric, so the two-sided p is twice the smaller tail.
    p = np.minimum(1.0, 2 * stats.binom.cdf(np.minimum(k, n - k), n, 0.5))
    return np.where(n > 0, p, np.nan)


def holm_adjust(p_values: np.ndarray | list[float]) -> np.ndarray:
    """Holm-Bonferroni adjusted p-values (statsmodels' multipletests); NaNs stay NaN and are not tests."""
    p = np.asarray(p_values, dtype=float)
    adjusted = np.full_like(p, np.nan)
    valid = ~np.isnan(p)
    if valid.any():
        adjusted[valid] = multipletests(p[valid], method="holm")[1]
    return adjusted


@dataclass(frozen=True)
class ShareTests:
    """Per group: participants and votes counted, the share with its interval, p against 1/2, and how.

    `icc` is the ANOVA intra-participant correlation and `icc_upper` its 80 % one-sided upper bound;
    `df` is the t test's degrees of freedom (NaN for the exact tests); `pivot_row` is the input row of the
    participant whose removal moves the t test's p furthest (-1 where none) and `pivot_p` that p.
    """

    participants: np.ndarray
    votes: np.ndarray
    share: np.ndarray
    ci_low: np.ndarray
    ci_high: np.ndarray
    p_value: np.ndarray
    icc: np.ndarray
    icc_upper: np.ndarray
    design_effect: np.ndarray
    method: np.ndarray
    df: np.ndarray
    pivot_row: np.ndarray
    pivot_p: np.ndarray


def icc_anova(
    group: np.ndarray, wins: np.ndarray, votes: np.ndarray, squared: np.ndarray, groups: int, level: float
) -> tuple[np.ndarray, np.ndarray]:
    """One-way ANOVA intra-participant correlation per group and its one-sided upper bound at `level`.

    ICC = (F - 1) / (F + m0 - 1) with F = between- over within-participant mean square and m0 the
    adjusted votes per participant (the unbalanced design's average); the bound puts F / F_level(k - 1,
    N - k) in its place (Searle's interval). NaN where no participant voted twice, or nothing varies.
    """
    with np.errstate(divide="ignore", invalid="ignore"):

        def total(values: np.ndarray) -> np.ndarray:
            return np.bincount(group, weights=values, minlength=groups)

        k, n = np.bincount(group, minlength=groups).astype(float), total(votes)
        between = total(wins**2 / votes) - total(wins) ** 2 / n
        within = total(squared) - total(wins**2 / votes)
        f = (between / (k - 1)) / (within / (n - k))
        m0 = (n - total(votes**2) / n) / (k - 1)
        upper = f / stats.f.ppf(1 - level, k - 1, n - k)
        # Written as 1 - m0 / (F + m0 - 1) so that F = inf (no spread within participants) gives 1.
        return 1 - m0 / (f + m0 - 1), 1 - m0 / (upper + m0 - 1)


def clustered_share_tests(
    group: np.ndarray,
    wins: np.ndarray,
    votes: np.ndarray,
    groups: int,
    confidence: float = 0.95,
    wins_squared: np.ndarray | None = None,
) -> ShareTests:
    """Test share = 1/2 per group from per-participant tallies (rows: group index, wins, votes > 0).

    A group where every participant gave at most one whole vote gets the exact binomial test and Wilson
    interval. Otherwise: the one-sample t test over participants' own shares (each participant counts
    once, t reference on participants - 1 degrees of freedom), and its t interval. This is the CR2
    bias-reduced cluster-robust test with Bell-McCaffrey degrees of freedom for equal participant weights;
    weighting participants by their votes (1 / (1 + (m - 1) ICC) per vote, from an estimated ICC) gained
    power in lopsided designs but rejected a true null in 6-8 % of simulated studies, so every participant
    weighs the same (benchmarks/calibration.py). Where every vote went one way, or every participant's own
    share equals the mean (no spread), the group falls back to an exact sign test over participants.
    `wins_squared` is the per-row sum of squared outcomes when half votes (0.5) occur (for the ICC); by
    default outcomes are 0/1.
    """
    group = np.asarray(group, dtype=np.int64)
    wins, votes = np.asarray(wins, dtype=float), np.asarray(votes, dtype=float)
    wins_squared = wins if wins_squared is None else np.asarray(wins_squared, dtype=float)

    def total(values: np.ndarray) -> np.ndarray:
        return np.bincount(group, weights=values, minlength=groups)

    participants = np.bincount(group, minlength=groups).astype(float)
    n_votes, n_wins = total(votes), total(wins)
    most = np.zeros(groups)
    np.maximum.at(most, group, votes)
    halves = total(wins % 1 != 0) > 0
    icc, icc_upper = icc_anova(group, wins, votes, wins_squared, groups, ICC_BOUND)
    with np.errstate(divide="ignore", invalid="ignore"):
        share = n_wins / n_votes

        # Exact path: one whole vote per participant, the votes are independent.
        k, n = toward_half(n_wins, n_votes)
        exact_low, exact_high = wilson_intervals(k, n, confidence)
        exact_p = binomial_p_values(n_wins, n_votes)

        # Sign test over participants: each participant's majority is one vote.
        lean_a, lean_b = total(wins > votes / 2), total(wins < votes / 2)
        # Nobody leaning either way is no evidence at all: p = 1.
        sign_p = np.where(lean_a + lean_b > 0, binomial_p_values(lean_a, lean_a + lean_b), 1.0)
        sign_low, sign_high = wilson_intervals(share * participants, participants, confidence)

        # t test over participants' own shares.
        own = wins / votes
        mean = total(own) / participants
        se = np.sqrt(total((own - mean[group]) ** 2) / (participants - 1) / participants)
        df = participants - 1
        t = stats.t.ppf(1 - (1 - confidence) / 2, df)
        t_p = 2 * stats.t.sf(np.abs(mean - 0.5) / se, df)
        t_low, t_high = np.clip(mean - t * se, 0, 1), np.clip(mean + t * se, 0, 1)
        design_effect = 1 + (n_votes / participants - 1) * np.maximum(icc, 0)

    exact = (most <= 1) & ~halves
    # No t test where every vote went one way, with one participant, or where every participant sits
    # exactly at the mean (zero spread: the t statistic would divide by 0).
    one_way = ~exact & ((n_wins <= 0) | (n_wins >= n_votes) | (participants < 2) | ~(se > 0))
    tested = ~exact & ~one_way

    def pick(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> np.ndarray:
        return np.where(exact, a, np.where(one_way, b, c))

    # Leave-one-out: each participant's p had they not taken part (t test on the others' shares), to
    # name the one whose removal moves p furthest (a verdict that rests on one person).
    with np.errstate(divide="ignore", invalid="ignore"):
        rest = participants[group] - 1
        rest_mean = (participants * mean)[group] / rest - own / rest
        rest_ss = total((own - mean[group]) ** 2)[group] - (own - mean[group]) ** 2 * (rest + 1) / rest
        rest_se = np.sqrt(np.maximum(rest_ss, 0) / (rest - 1) / rest)
        rest_p = 2 * stats.t.sf(np.abs(rest_mean - 0.5) / rest_se, rest - 1)
        shift = np.where(tested[group] & (rest >= 2), np.abs(np.log(rest_p) - np.log(t_p[group])), -np.inf)
    order = np.lexsort((-np.nan_to_num(shift, nan=np.inf), group))
    first = order[np.r_[True, group[order][1:] != group[order][:-1]]] if len(group) else order
    first = first[np.isfinite(shift[first]) | np.isnan(shift[first])]
    pivot_row = np.full(groups, -1)
    pivot_row[group[first]] = first
    pivot_p = np.full(groups, np.nan)
    pivot_p[group[first]] = rest_p[first]

    empty = n_votes <= 0
    return ShareTests(
        participants=participants,
        votes=n_votes,
        share=np.where(tested, mean, share),
        ci_low=np.where(empty, np.nan, pick(exact_low, sign_low, t_low)),
        ci_high=np.where(empty, np.nan, pick(exact_high, sign_high, t_high)),
        p_value=np.where(empty, np.nan, pick(exact_p, sign_p, t_p)),
        icc=np.where(~empty & (most > 1), icc, np.nan),
        icc_upper=np.where(~empty & (most > 1), icc_upper, np.nan),
        design_effect=np.where(
            ~empty & (most > 1), design_effect, np.where(~empty & (most <= 1), 1.0, np.nan)
        ),
        method=np.where(empty, "", pick(np.full(groups, EXACT), np.full(groups, SIGN), np.full(groups, GEE))),
        df=np.where(tested, df, np.nan),
        pivot_row=pivot_row,
        pivot_p=pivot_p,
    )
