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
GEE = "GEE logit, exchangeable, bias-reduced robust SE"
SIGN = "exact sign test over participants (no GEE: all votes one way, or no spread)"


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
    """Per group: participants and votes counted, the share with its interval, p against 1/2, and how."""

    participants: np.ndarray
    votes: np.ndarray
    share: np.ndarray
    ci_low: np.ndarray
    ci_high: np.ndarray
    p_value: np.ndarray
    icc: np.ndarray
    design_effect: np.ndarray
    method: np.ndarray


def clustered_share_tests(
    group: np.ndarray,
    wins: np.ndarray,
    votes: np.ndarray,
    groups: int,
    confidence: float = 0.95,
    wins_squared: np.ndarray | None = None,
    iterations: int = 50,
) -> ShareTests:
    """Test share = 1/2 per group from per-participant tallies (rows: group index, wins, votes > 0).

    A group where every participant gave at most one vote gets the exact binomial test and Wilson interval.
    Otherwise: the intercept-only logistic GEE with exchangeable working correlation (statsmodels' GEE
    solves the same equations, one model at a time; this closed form does thousands of groups in one pass
    and is tested equal to it), with Mancl-DeRouen bias-reduced sandwich errors and a t reference on
    participants - 1 degrees of freedom, because plain sandwich errors reject too often with few
    participants (see benchmarks/calibration.py). Where every vote went one way the logit is infinite, so
    the group falls back to an exact sign test over participants. `wins_squared` is the per-row sum of
    squared outcomes when half votes (0.5) occur; by default outcomes are 0/1.
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
    with np.errstate(divide="ignore", invalid="ignore"):
        share = n_wins / n_votes

        # Exact path: one vote per participant, the votes are independent.
        k, n = toward_half(n_wins, n_votes)
        exact_low, exact_high = wilson_intervals(k, n, confidence)
        exact_p = binomial_p_values(n_wins, n_votes)

        # Sign test over participants: each participant's majority is one vote.
        lean_a, lean_b = total(wins > votes / 2), total(wins < votes / 2)
        # Nobody leaning either way is no evidence at all: p = 1.
        sign_p = np.where(lean_a + lean_b > 0, binomial_p_values(lean_a, lean_a + lean_b), 1.0)
        sign_low, sign_high = wilson_intervals(share * participants, participants, confidence)

        # GEE: alternate the mean (a weighted share) and the exchangeable correlation (statsmodels' moment
        # estimator with ddof 1), to a fixed point.
        mu, rho = share.copy(), np.zeros(groups)
        pairs = total(votes * (votes - 1) / 2)
        for _ in range(iterations):
            variance = (mu * (1 - mu))[group]
            residual = wins - votes * mu[group]
            sum_r = residual / np.sqrt(variance)
            sum_r2 = (wins_squared - 2 * mu[group] * wins + votes * mu[group] ** 2) / variance
            scale = total(sum_r2) / (n_votes - 1)
            new_rho = total((sum_r**2 - sum_r2) / 2) / scale / (pairs - 1)
            # A negative working correlation can make weights blow up; independence is then the safe choice.
            new_rho = np.clip(np.nan_to_num(new_rho), 0.0, 0.99)
            weight = 1 / (1 + (votes - 1) * new_rho[group])
            new_mu = total(weight * wins) / total(weight * votes)
            done = np.nanmax(np.abs(np.r_[new_mu - mu, new_rho - rho]), initial=0) < 1e-12
            mu, rho = new_mu, new_rho
            if done:
                break
        weight = 1 / (1 + (votes - 1) * rho[group])
        weighted_votes = total(weight * votes)
        # Mancl-DeRouen: each participant's residual inflated by 1 / (1 - its leverage w m / sum(w m)).
        leverage = weight * votes / weighted_votes[group]
        residual = (wins - votes * mu[group]) / (1 - leverage)
        se = np.sqrt(total((weight * residual) ** 2)) / (mu * (1 - mu) * weighted_votes)
        beta = np.log(mu / (1 - mu))
        z = stats.norm.ppf(1 - (1 - confidence) / 2)
        gee_p = 2 * stats.norm.sf(np.abs(beta / se))
        gee_low, gee_high = 1 / (1 + np.exp(-(beta - z * se))), 1 / (1 + np.exp(-(beta + z * se)))
        design_effect = 1 + (n_votes / participants - 1) * rho

    exact = most <= 1
    # No sandwich where the logit is infinite, with one participant, or where every participant sits exactly
    # at the mean (zero spread: the Wald test would divide by 0).
    one_way = ~exact & ((n_wins <= 0) | (n_wins >= n_votes) | (participants < 2) | ~(se > 0))
    gee = ~exact & ~one_way

    def pick(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> np.ndarray:
        return np.where(exact, a, np.where(one_way, b, c))

    empty = n_votes <= 0
    return ShareTests(
        participants=participants,
        votes=n_votes,
        share=np.where(gee, mu, share),
        ci_low=np.where(empty, np.nan, pick(exact_low, sign_low, gee_low)),
        ci_high=np.where(empty, np.nan, pick(exact_high, sign_high, gee_high)),
        p_value=np.where(empty, np.nan, pick(exact_p, sign_p, gee_p)),
        icc=np.where(gee, rho, np.nan),
        design_effect=np.where(gee, design_effect, np.where(exact, 1.0, np.nan)),
        method=np.where(empty, "", pick(np.full(groups, EXACT), np.full(groups, SIGN), np.full(groups, GEE))),
    )
