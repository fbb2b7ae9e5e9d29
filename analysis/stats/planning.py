"""Sample-size planning in participants, for the test the headline table runs."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from scipy import stats

from analysis.stats.inference import EXACT, SIGN
from analysis.stats.report import StudyReport
from analysis.stats.tables import jsonable
from peftlab.errors import UserInputError


@dataclass(frozen=True)
class SampleSizePlan:
    """Participants needed to detect `preference`, from which power stays at or above the target."""

    preference: float
    alpha: float
    power: float
    votes_per_participant: int
    decisive_share: float
    icc: float
    design_effect: float
    participants: int
    decisive_votes: float
    achieved_power: float
    method: str

    def to_dict(self) -> dict[str, Any]:
        """The plan as a dict."""
        return jsonable(asdict(self))

    def to_text(self) -> str:
        """The plan as one sentence."""
        return (
            f"To detect a {self.preference:.0%} preference at alpha={self.alpha} with power {self.power:.0%}: "
            f"{self.participants} participants at {self.votes_per_participant} vote(s) each "
            f"({self.decisive_share:.0%} decisive, ICC {self.icc:.3g}, design effect {self.design_effect:.3g}; "
            f"power {self.achieved_power:.3f} there and at every larger size; {self.method})."
        )


def exact_power(n: np.ndarray, preference: float, alpha: float) -> np.ndarray:
    """Power of the exact two-sided binomial test (H0: 0.5) with n votes, vectorised over n."""
    # Under H0 the test is symmetric: reject when k <= c or k >= n - c, c the largest k with 2 P(X <= k) <= alpha.
    c = stats.binom.ppf(alpha / 2, n, 0.5)
    c = np.where(2 * stats.binom.cdf(c, n, 0.5) <= alpha * (1 + 1e-9), c, c - 1)
    return np.where(c >= 0, stats.binom.cdf(c, n, preference) + stats.binom.sf(n - c - 1, n, preference), 0.0)


def clustered_power(
    participants: np.ndarray, preference: float, alpha: float, votes: float, icc: float
) -> np.ndarray:
    """Power of the headline's t test over participants' own shares (n - 1 df), from the noncentral t.

    A participant's share of m votes varies by p (1 - p)(1 + (m - 1) ICC) / m (the design effect over m),
    and the test is unbiased there (no n / (n - 1) inflation: the t reference already pays for n).
    """
    n = np.asarray(participants, dtype=float)
    sd = math.sqrt(preference * (1 - preference) * (1 + (votes - 1) * icc) / votes)
    with np.errstate(divide="ignore", invalid="ignore"):
        df = n - 1
        noncentrality = abs(preference - 0.5) * np.sqrt(n) / sd
        critical = stats.t.ppf(1 - alpha / 2, df)
        power = stats.nct.sf(critical, df, noncentrality) + stats.nct.cdf(-critical, df, noncentrality)
    return np.where(n >= 2, power, 0.0)


def plan_sample_size(
    *,
    preference: float,
    alpha: float = 0.05,
    power: float = 0.8,
    votes_per_participant: int = 1,
    icc: float = 0.0,
    decisive_share: float = 1.0,
    max_participants: int = 100_000,
) -> SampleSizePlan:
    """The fewest participants from which the headline test's power stays at or above `power`.

    One vote each: the exact binomial test, whose power zig-zags with n (so the answer is the n after the
    last one below target, not the first one above it). Several votes each: the t test over participants'
    own shares, whose power depends on the intra-participant correlation `icc` through the design effect
    1 + (m - 1) x ICC, with m the expected decisive votes (votes x decisive_share).
    """
    if not 0 < preference < 1 or preference == 0.5:
        raise UserInputError(f"preference must be in (0, 1) and not 0.5, got {preference}; e.g. 0.65")
    if not 0 < alpha < 1 or not 0 < power < 1:
        raise UserInputError(f"alpha and power must be in (0, 1), got alpha={alpha}, power={power}")
    if not 0 < decisive_share <= 1 or votes_per_participant < 1:
        raise UserInputError("decisive_share must be in (0, 1] and votes per participant at least 1")
    if not 0 <= icc <= 1:
        raise UserInputError(f"the intra-participant correlation must be in [0, 1], got {icc}; e.g. 0.2")
    votes = votes_per_participant * decisive_share
    decisive = np.arange(1, max_participants + 1)
    if votes_per_participant == 1:
        achieved = exact_power(decisive, preference, alpha)
        icc, method = 0.0, "exact binomial power"
    else:
        achieved = clustered_power(decisive, preference, alpha, votes, icc)
        method = "noncentral t power of the t test over participants' shares"
    below = np.flatnonzero(achieved < power)
    if len(below) and below[-1] == len(achieved) - 1:
        raise UserInputError(
            f"even {max_participants} participants do not reach power {power}; raise the maximum"
        )
    index = below[-1] + 1 if len(below) else 0
    # One vote each: the plan above counts decisive votes; ties need proportionally more participants.
    participants = (
        math.ceil(int(decisive[index]) / decisive_share)
        if votes_per_participant == 1
        else int(decisive[index])
    )
    return SampleSizePlan(
        preference=preference,
        alpha=alpha,
        power=power,
        votes_per_participant=votes_per_participant,
        decisive_share=decisive_share,
        icc=icc,
        design_effect=1 + (votes - 1) * icc if votes > 1 else 1.0,
        participants=participants,
        decisive_votes=float(decisive[index]) if votes_per_participant == 1 else participants * votes,
        achieved_power=float(achieved[index]),
        method=method,
    )


def _no_icc_cause(report: StudyReport) -> str:
    """Why no headline row of the report has an ICC, in the study's own terms."""
    methods = {row.method for row in report.headline.rows if row.votes}
    if not methods:
        return "it has no decisive votes yet"
    causes = []
    if SIGN in methods:
        causes.append(
            "every participant's votes went the same way (all for one arm, or the same split for everyone), "
            "so there is no spread between participants to measure it from"
        )
    if EXACT in methods:
        causes.append("each participant gave one vote per comparison")
    return "; and ".join(causes) or "no headline row has one"


def plan_from_report(
    report: StudyReport,
    *,
    votes_per_participant: int,
    icc: float | None,
    decisive_share: float | None = None,
    **plan: Any,
) -> SampleSizePlan:
    """Plan from a pilot: the given ICC and decisive share, or else the pilot's own, erring large.

    The ICC is the largest 80 % one-sided upper confidence bound on the pilot's headline rows (a small
    pilot's point estimate is often far too low, and planning from it leaves the study underpowered); the
    decisive share is the smallest share of non-tie votes among them (1 when the pilot has no votes).
    """
    rows = [row for row in report.headline.rows if row.votes]
    if icc is None:
        measured = [row.icc_upper for row in rows if not math.isnan(row.icc_upper)]
        if votes_per_participant > 1 and not measured:
            raise UserInputError(
                f"this study measured no intra-participant correlation: {_no_icc_cause(report)}; "
                "give --icc, e.g. 0.2"
            )
        icc = min(max(measured, default=0.0), 1.0)
    if decisive_share is None:
        half = report.config.ties_as_half
        shares = [
            (row.votes - row.ties if half else row.votes) / (row.votes + (0 if half else row.ties))
            for row in rows
        ]
        decisive_share = min(shares, default=1.0)
    return plan_sample_size(
        votes_per_participant=votes_per_participant, icc=max(icc, 0.0), decisive_share=decisive_share, **plan
    )
