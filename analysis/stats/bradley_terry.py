"""Bradley-Terry strengths: the maximum-likelihood fit, when it exists, and participant-bootstrap intervals.

Hand-written: choix and the like fit one problem at a time; the bootstrap and benchmarks/calibration.py fit
hundreds of thousands of small problems at once, which a batched Newton solve does in a few passes.
"""

from __future__ import annotations

import numpy as np
from scipy import stats
from scipy.sparse.csgraph import connected_components

MIN_PARTICIPANTS_FOR_INTERVALS = 10


def bradley_terry(wins: np.ndarray, iterations: int = 100, tolerance: float = 1e-12) -> np.ndarray:
    """Bradley-Terry strengths (summing to 1) from win matrices [..., i, j] = wins of i over j (Newton).

    Leading dimensions are independent problems (the bootstrap solves them all at once); an arm with no
    comparisons gets NaN. Where no maximum exists (an arm winning or losing everything) log-strengths are
    capped at +-30: check `not_estimable` before trusting a single fit.
    """
    wins = np.asarray(wins, dtype=float)
    k = wins.shape[-1]
    games = wins + np.swapaxes(wins, -1, -2)
    compared = games.sum(axis=-1) > 0
    total_wins = wins.sum(axis=-1)
    theta = np.zeros(wins.shape[:-1])
    # The log-likelihood only sees differences of log-strengths: the all-ones term pins their mean, the
    # identity on arms never compared keeps them at 0, and a ridge of 1e-9 keeps any other system solvable.
    pin = np.full((k, k), 1.0 / k) + 1e-9 * np.eye(k)
    absent = (~compared)[..., :, None] * np.eye(k)
    for _ in range(iterations):
        p = 1 / (1 + np.exp(theta[..., None, :] - theta[..., :, None]))  # P(i beats j)
        gradient = total_wins - (games * p).sum(axis=-1)
        information = games * p * (1 - p)
        hessian = information.sum(axis=-1)[..., :, None] * np.eye(k) - information + pin + absent
        step = np.linalg.solve(hessian, gradient[..., None])[..., 0]
        theta = np.clip(theta + step, -30, 30)
        if np.max(np.abs(step), initial=0) < tolerance:
            break
    strength = np.where(compared, np.exp(theta - theta.max(axis=-1, keepdims=True)), 0.0)
    return np.where(compared, strength / strength.sum(axis=-1, keepdims=True), np.nan)


def not_estimable(wins: np.ndarray, arms: list[str], participants: int) -> str:
    """Why a Bradley-Terry fit of this win matrix has no finite maximum ('' when it has one)."""
    if participants < 2:
        return f"{participants} participant(s); Bradley-Terry needs at least 2"
    games = wins + wins.T
    present = np.flatnonzero(games.sum(axis=1) > 0)
    games, wins = games[np.ix_(present, present)], wins[np.ix_(present, present)]
    names = [arms[i] for i in present]
    parts, label = connected_components(games > 0, directed=False)
    if parts > 1:
        groups = [
            ", ".join(n for n, part in zip(names, label, strict=True) if part == g) for g in range(parts)
        ]
        return "the comparison graph is disconnected (" + " | ".join(groups) + " were never compared)"
    for name, won, played in zip(names, wins.sum(axis=1), games.sum(axis=1), strict=True):
        if won >= played:
            return f"{name} won every comparison (its strength would be infinite)"
        if won <= 0:
            return f"{name} lost every comparison (its strength would be 0)"
    # Zermelo/Ford: a maximum exists iff every arm can be reached from every other through wins.
    if connected_components(wins > 0, directed=True, connection="strong")[0] > 1:
        return "a group of arms beat all the others in every comparison"
    return ""


def bootstrap_intervals(
    samples: np.ndarray, strength: np.ndarray, participants: int, confidence: float
) -> tuple[np.ndarray, np.ndarray]:
    """Intervals of each strength from its participant-bootstrap `samples` (resamples x arms).

    Percentile intervals cover only about 89 % at 10 participants (the bootstrap spread of a mean of n draws
    is (n-1)/n of the true one, and a few resamples are degenerate). So: a t interval (n - 1 degrees of
    freedom) on the logit of the strength, whose standard error is the bootstrap interquartile range / 1.349
    (robust to the degenerate resamples) times sqrt(n / (n - 1)). Both coverages are measured by
    benchmarks/calibration.py.
    """
    with np.errstate(divide="ignore", invalid="ignore"):
        logits = np.log(samples / (1 - samples))
        q75, q25 = np.nanpercentile(logits, [75, 25], axis=0)
        se = (q75 - q25) / 1.349 * np.sqrt(participants / (participants - 1))
        t = stats.t.ppf(1 - (1 - confidence) / 2, participants - 1)
        centre = np.log(strength / (1 - strength))
        return 1 / (1 + np.exp(-(centre - t * se))), 1 / (1 + np.exp(-(centre + t * se)))


def bootstrap_strengths(per_participant: np.ndarray, resamples: int, rng: np.random.Generator) -> np.ndarray:
    """Bradley-Terry strengths of `resamples` resamples of participants (drawn with replacement)."""
    count, k = per_participant.shape[0], per_participant.shape[1]
    flat = per_participant.reshape(count, k * k)
    out = []
    for start in range(0, resamples, 500):
        size = min(500, resamples - start)
        # How many times each participant is drawn in each resample, in batches to bound memory.
        draws = rng.integers(0, count, size=(size, count)) + count * np.arange(size)[:, None]
        times = np.bincount(draws.ravel(), minlength=size * count).reshape(size, count).astype(float)
        out.append(bradley_terry((times @ flat).reshape(size, k, k)))
    return np.concatenate(out)
