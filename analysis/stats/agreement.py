"""Inter-rater agreement from items x categories count matrices.

Hand-written: statsmodels' fleiss_kappa assumes every item has the same number of raters (it takes the
largest row sum), which trials of a study rarely have, and no well-kept library computes Krippendorff's alpha
from count matrices in our dependencies.
"""

from __future__ import annotations

import math

import numpy as np


def fleiss_kappa(counts: np.ndarray) -> float:
    """Fleiss' kappa of an items x categories count matrix (items may have different numbers of raters)."""
    counts = np.asarray(counts, dtype=float)
    raters = counts.sum(axis=1)
    counts, raters = counts[raters >= 2], raters[raters >= 2]
    if len(counts) == 0:
        return math.nan
    per_item = ((counts**2).sum(axis=1) - raters) / (raters * (raters - 1))
    category_share = counts.sum(axis=0) / raters.sum()
    expected = float((category_share**2).sum())
    if expected == 1.0:
        return math.nan
    return float((per_item.mean() - expected) / (1 - expected))


def krippendorff_alpha_nominal(counts: np.ndarray) -> float:
    """Krippendorff's alpha for nominal data from a units x categories count matrix (the values of each unit)."""
    counts = np.asarray(counts, dtype=float)
    pairable = counts.sum(axis=1)
    counts, pairable = counts[pairable >= 2], pairable[pairable >= 2]
    if len(counts) == 0:
        return math.nan
    # Coincidences of each value with itself: sum over units of n_uc (n_uc - 1) / (m_u - 1).
    agreeing = float((counts * (counts - 1) / (pairable - 1)[:, None]).sum())
    totals = counts.sum(axis=0)
    n = float(totals.sum())
    expected_disagreement = n * n - float((totals**2).sum())
    if expected_disagreement == 0:
        return math.nan
    return float(1 - (n - 1) * (n - agreeing) / expected_disagreement)
