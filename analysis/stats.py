"""The statistics of a pairwise preference study (pure pandas + scipy, no Django).

Input is a DataFrame with one row per response (the columns of `RESPONSE_COLUMNS`); `analyze_responses`
returns a `StudyReport` whose tables render as text, as DataFrames and as JSON.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Generic, TypeVar

import numpy as np
import pandas as pd
from scipy import stats

from peftlab.errors import UserInputError

RESPONSE_COLUMNS = (
    "participant",
    "external_id",
    "trial",
    "trial_index",
    "question",
    "question_text",
    "landmark",
    "prompt",
    "left_arm",
    "right_arm",
    "choice",
    "chosen_arm",
    "response_ms",
    "shown_at",
    "answered_at",
    "is_attention_check",
    "attention_passed",
    "participant_failed_attention",
    "participant_finished",
)
# The columns the analysis needs; the others are carried for exports.
REQUIRED_COLUMNS = (
    "participant",
    "question",
    "landmark",
    "prompt",
    "left_arm",
    "right_arm",
    "choice",
    "is_attention_check",
    "participant_failed_attention",
)
CHOICES = ("left", "right", "both", "neither")
EXTRA_OPTIONS = ("both", "neither")
BREAKDOWNS = ("landmark", "prompt")
ALL = "all"


@dataclass(frozen=True)
class AnalysisConfig:
    """How a study is analysed."""

    exclude_failed_attention: bool = field(
        default=True, metadata={"help": "Drop every response of participants who failed an attention check."}
    )
    ties_as_half: bool = field(
        default=False,
        metadata={
            "help": "Count 'both' and 'neither' as half a vote for each arm in binomial tests and Bradley-Terry."
        },
    )
    confidence: float = field(default=0.95, metadata={"help": "Level of every confidence interval."})
    bootstrap: int = field(
        default=1000, metadata={"help": "Bootstrap resamples of participants for Bradley-Terry."}
    )
    seed: int = field(default=0, metadata={"help": "Seed of the bootstrap, so a report is reproducible."})
    breakdowns: tuple[str, ...] = field(
        default=BREAKDOWNS, metadata={"help": "Columns to break each question down by (landmark, prompt)."}
    )

    def __post_init__(self) -> None:
        if not 0.5 <= self.confidence < 1:
            raise UserInputError(f"confidence must be in [0.5, 1), got {self.confidence}; e.g. 0.95")
        if self.bootstrap < 0:
            raise UserInputError(
                f"bootstrap must be 0 (off) or a positive number of resamples, got {self.bootstrap}"
            )
        unknown = sorted(set(self.breakdowns) - set(BREAKDOWNS))
        if unknown:
            raise UserInputError(f"unknown breakdown(s) {unknown}; choose from {list(BREAKDOWNS)}")


R = TypeVar("R")


@dataclass
class ResultTable(Generic[R]):
    """A titled list of result rows (dataclasses) that renders as a DataFrame, text or JSON."""

    title: str
    row_type: type
    rows: list[R]
    note: str = ""

    def to_frame(self) -> pd.DataFrame:
        """The rows as a DataFrame, one column per field."""
        return pd.DataFrame(
            [asdict(row) for row in self.rows], columns=[f.name for f in fields(self.row_type)]
        )

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict: title, note and the rows (NaN becomes null)."""
        return {"title": self.title, "note": self.note, "rows": [_jsonable(asdict(row)) for row in self.rows]}

    def to_text(self) -> str:
        """The table as aligned text under its title."""
        body = (
            self.to_frame().to_string(index=False, float_format=_format_float) if self.rows else "(no data)"
        )
        note = f"\n{self.note}" if self.note else ""
        return f"{self.title}\n{'=' * len(self.title)}\n{body}{note}\n"


def _format_float(value: float) -> str:
    return f"{value:.4g}"


def _jsonable(row: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in row.items():
        if isinstance(value, np.generic):
            value = value.item()
        if isinstance(value, float) and not math.isfinite(value):
            value = None
        out[key] = value
    return out


@dataclass(frozen=True)
class Exclusions:
    """Who and what was left out of the analysis, and why."""

    participants_total: int
    participants_failed_attention: int
    participants_excluded: int
    participants_unfinished: int
    participants_analysed: int
    responses_total: int
    attention_check_responses: int
    responses_excluded: int
    responses_analysed: int
    exclude_failed_attention: bool

    def to_frame(self) -> pd.DataFrame:
        """One row per count."""
        return pd.DataFrame({"count": list(asdict(self).values())}, index=list(asdict(self)))

    def to_dict(self) -> dict[str, Any]:
        """The counts as a dict."""
        return _jsonable(asdict(self))

    def to_text(self) -> str:
        """The counts as text."""
        title = "Exclusions"
        return f"{title}\n{'=' * len(title)}\n{self.to_frame().to_string()}\n"


@dataclass(frozen=True)
class OptionShare:
    """How often one option (an arm, 'both' or 'neither') was chosen, with a Wilson interval."""

    question: str
    scope: str
    group: str
    option: str
    count: int
    n: int
    share: float
    ci_low: float
    ci_high: float


@dataclass(frozen=True)
class PairTest:
    """Exact two-sided binomial test of arm_a vs arm_b on the decisive votes of the trials showing both."""

    question: str
    scope: str
    group: str
    arm_a: str
    arm_b: str
    wins_a: int
    wins_b: int
    both: int
    neither: int
    votes: float
    share_a: float
    ci_low: float
    ci_high: float
    p_value: float
    p_holm: float = math.nan


@dataclass(frozen=True)
class ChiSquareTest:
    """Chi-square goodness of fit of all options of a pair's trials against equal shares."""

    question: str
    scope: str
    group: str
    arm_a: str
    arm_b: str
    options: str
    counts: str
    n: int
    statistic: float
    dof: int
    min_expected: float
    p_value: float
    p_holm: float = math.nan


@dataclass(frozen=True)
class PositionBias:
    """Share of decisive votes that went to the left image, tested against 0.5."""

    question: str
    left: int
    decisive: int
    left_share: float
    ci_low: float
    ci_high: float
    p_value: float
    p_holm: float = math.nan


@dataclass(frozen=True)
class Strength:
    """A Bradley-Terry strength (the strengths of a question sum to 1) with a participant-bootstrap interval."""

    question: str
    arm: str
    rank: int
    strength: float
    ci_low: float
    ci_high: float
    wins: float
    comparisons: float


@dataclass(frozen=True)
class Agreement:
    """Inter-rater agreement on one question: items are (prompt, pair of arms), categories the options."""

    question: str
    items: int
    ratings: int
    fleiss_kappa: float
    krippendorff_alpha: float


@dataclass(frozen=True)
class SampleSizePlan:
    """Decisive votes (and participants) an exact two-sided binomial test needs to detect `preference`."""

    preference: float
    alpha: float
    power: float
    votes: int
    achieved_power: float
    decisive_share: float
    votes_per_participant: int
    participants: int

    def to_dict(self) -> dict[str, Any]:
        """The plan as a dict."""
        return _jsonable(asdict(self))

    def to_text(self) -> str:
        """The plan as one sentence."""
        return (
            f"To detect a {self.preference:.0%} preference at alpha={self.alpha} with power {self.power:.0%}: "
            f"{self.votes} decisive votes (achieved power {self.achieved_power:.3f}), "
            f"i.e. {self.participants} participants at {self.votes_per_participant} vote(s) each "
            f"and {self.decisive_share:.0%} decisive."
        )


@dataclass
class StudyReport:
    """Every table of a study's analysis."""

    config: AnalysisConfig
    exclusions: Exclusions
    shares: ResultTable[OptionShare]
    pair_tests: ResultTable[PairTest]
    chi_square: ResultTable[ChiSquareTest]
    position_bias: ResultTable[PositionBias]
    bradley_terry: ResultTable[Strength]
    agreement: ResultTable[Agreement]

    def tables(self) -> dict[str, ResultTable]:
        """The result tables by name, in reading order."""
        return {
            "shares": self.shares,
            "pair_tests": self.pair_tests,
            "chi_square": self.chi_square,
            "position_bias": self.position_bias,
            "bradley_terry": self.bradley_terry,
            "agreement": self.agreement,
        }

    def to_dict(self) -> dict[str, Any]:
        """The whole report as a JSON-able dict."""
        return {
            "config": _jsonable(
                {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self.config).items()}
            ),
            "exclusions": self.exclusions.to_dict(),
            **{name: table.to_dict() for name, table in self.tables().items()},
        }

    def to_json(self) -> str:
        """The report as indented JSON."""
        return json.dumps(self.to_dict(), indent=2)

    def to_text(self) -> str:
        """The report as text tables."""
        return "\n".join([self.exclusions.to_text(), *(table.to_text() for table in self.tables().values())])


def wilson_intervals(count: Any, n: Any, confidence: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
    """Wilson score intervals of count/n, vectorised (the same as binomtest's proportion_ci(method='wilson'))."""
    count, n = np.asarray(count, dtype=float), np.asarray(n, dtype=float)
    z = stats.norm.ppf(1 - (1 - confidence) / 2)
    with np.errstate(divide="ignore", invalid="ignore"):
        center = (count + z * z / 2) / (n + z * z)
        half = z / (n + z * z) * np.sqrt(count * (n - count) / n + z * z / 4)
    low, high = np.where(n > 0, center - half, np.nan), np.where(n > 0, center + half, np.nan)
    return np.clip(low, 0, 1), np.clip(high, 0, 1)


def binomial_p_values(count: Any, n: Any) -> np.ndarray:
    """Exact two-sided binomial p-values against 0.5, vectorised; half votes are rounded towards n/2."""
    count, n = np.asarray(count, dtype=float), np.rint(np.asarray(n, dtype=float))
    # Rounding towards the null never makes a p-value smaller than the exact one would be (conservative).
    k = np.where(count > n / 2, np.floor(count), np.ceil(count))
    # Under 0.5 the distribution is symmetric, so the two-sided p is twice the smaller tail.
    p = np.minimum(1.0, 2 * stats.binom.cdf(np.minimum(k, n - k), n, 0.5))
    return np.where(n > 0, p, np.nan)


def holm_adjust(p_values: np.ndarray | list[float]) -> np.ndarray:
    """Holm-Bonferroni adjusted p-values (NaNs stay NaN and do not count as tests)."""
    p = np.asarray(p_values, dtype=float)
    adjusted = np.full_like(p, np.nan)
    valid = np.flatnonzero(~np.isnan(p))
    m = len(valid)
    if m == 0:
        return adjusted
    order = valid[np.argsort(p[valid], kind="stable")]
    # Step down: the i-th smallest p is multiplied by (m - i), and adjusted values never decrease.
    scaled = np.maximum.accumulate((m - np.arange(m)) * p[order])
    adjusted[order] = np.minimum(scaled, 1.0)
    return adjusted


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


def bradley_terry(wins: np.ndarray, iterations: int = 5000, tolerance: float = 1e-10) -> np.ndarray:
    """Bradley-Terry strengths (summing to 1) from win matrices [..., i, j] = wins of i over j (Hunter's MM).

    Leading dimensions are independent problems (the bootstrap solves them all at once); an arm with no
    comparisons gets NaN.
    """
    wins = np.asarray(wins, dtype=float)
    games = wins + np.swapaxes(wins, -1, -2)
    total_wins = wins.sum(axis=-1)
    compared = games.sum(axis=-1) > 0
    strength = np.where(compared, 1.0, 0.0)
    strength = strength / strength.sum(axis=-1, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        for _ in range(iterations):
            pair_sum = strength[..., :, None] + strength[..., None, :]
            denominator = np.where(games > 0, games / pair_sum, 0.0).sum(axis=-1)
            updated = np.where(compared, total_wins / denominator, 0.0)
            updated = updated / updated.sum(axis=-1, keepdims=True)
            change = np.nanmax(np.abs(updated - strength))
            strength = updated
            if change < tolerance:
                break
    return np.where(compared, strength, np.nan)


def plan_sample_size(
    *,
    preference: float,
    alpha: float = 0.05,
    power: float = 0.8,
    decisive_share: float = 1.0,
    votes_per_participant: int = 1,
    max_votes: int = 100_000,
) -> SampleSizePlan:
    """The fewest decisive votes at which an exact two-sided binomial test (H0: 0.5) reaches `power`."""
    if not 0 < preference < 1 or preference == 0.5:
        raise UserInputError(f"preference must be in (0, 1) and not 0.5, got {preference}; e.g. 0.65")
    if not 0 < alpha < 1 or not 0 < power < 1:
        raise UserInputError(f"alpha and power must be in (0, 1), got alpha={alpha}, power={power}")
    if not 0 < decisive_share <= 1 or votes_per_participant < 1:
        raise UserInputError("decisive_share must be in (0, 1] and votes_per_participant at least 1")
    n = np.arange(1, max_votes + 1)
    # Under H0 the test is symmetric: reject when k <= c or k >= n - c, c the largest k with 2 P(X <= k) <= alpha.
    c = stats.binom.ppf(alpha / 2, n, 0.5)
    c = np.where(2 * stats.binom.cdf(c, n, 0.5) <= alpha * (1 + 1e-9), c, c - 1)
    achieved = np.where(
        c >= 0, stats.binom.cdf(c, n, preference) + stats.binom.sf(n - c - 1, n, preference), 0.0
    )
    reached = np.flatnonzero(achieved >= power)
    if len(reached) == 0:
        raise UserInputError(f"even {max_votes} decisive votes do not reach power {power}; raise max_votes")
    votes = int(n[reached[0]])
    return SampleSizePlan(
        preference=preference,
        alpha=alpha,
        power=power,
        votes=votes,
        achieved_power=float(achieved[reached[0]]),
        decisive_share=decisive_share,
        votes_per_participant=votes_per_participant,
        participants=math.ceil(votes / (decisive_share * votes_per_participant)),
    )


def prepare_responses(frame: pd.DataFrame) -> pd.DataFrame:
    """Check the columns and types of a response frame (as built, or read back from an export)."""
    missing = [column for column in REQUIRED_COLUMNS if column not in frame.columns]
    if missing:
        raise UserInputError(f"the responses lack the column(s) {missing}; export them with export_study")
    frame = frame.copy()
    # Categoricals: grouping and comparing integer codes is what keeps a million responses fast.
    for column in ("participant", "question", "landmark", "prompt", "left_arm", "right_arm", "choice"):
        if not isinstance(frame[column].dtype, pd.CategoricalDtype):
            frame[column] = frame[column].fillna("").astype(str).astype("category")
    for column in ("is_attention_check", "participant_failed_attention", "participant_finished"):
        if column in frame.columns:
            frame[column] = _bool_column(frame[column])
    bad = sorted(set(frame["choice"].cat.categories) - set(CHOICES))
    if bad:
        raise UserInputError(f"unknown choice value(s) {bad}; expected one of {list(CHOICES)}")
    return frame


def _bool_column(column: pd.Series) -> pd.Series:
    """A boolean column from booleans or their text (as CSV files hold them); missing is False."""
    if column.dtype == bool:
        return column
    return column.astype(str).str.strip().str.lower().isin(("true", "1", "1.0", "yes"))


def read_responses(path: Path) -> pd.DataFrame:
    """Read responses exported by export_study (CSV, JSON or Parquet, by the file's suffix)."""
    path = Path(path)
    if not path.is_file():
        raise UserInputError(f"no file at {path}; give the path of a file written by export_study")
    readers = {".csv": pd.read_csv, ".json": pd.read_json, ".parquet": pd.read_parquet}
    reader = readers.get(path.suffix.lower())
    if reader is None:
        raise UserInputError(f"cannot read {path.suffix!r} files; use .csv, .json or .parquet")
    kwargs = (
        {"dtype": {"participant": str, "external_id": str}, "keep_default_na": False}
        if reader is pd.read_csv
        else {}
    )
    if reader is pd.read_json:
        kwargs = {"orient": "records", "dtype": False}
    return prepare_responses(reader(path, **kwargs))


def analyze_responses(frame: pd.DataFrame, config: AnalysisConfig | None = None) -> StudyReport:
    """The full report of a study from its responses."""
    config = config or AnalysisConfig()
    frame = prepare_responses(frame)
    exclusions, data = _exclude(frame, config)
    data = _with_options(data)
    shares = _shares(data, config)
    pair_tests, chi_square = _pair_tests(data, config)
    position = _position_bias(data, config)
    # Holm across every test of the study: pair tests, chi-square tests and position-bias tests.
    all_p = (
        [row.p_value for row in pair_tests]
        + [row.p_value for row in chi_square]
        + [row.p_value for row in position]
    )
    adjusted = iter(holm_adjust(all_p))
    pair_tests = [replace(row, p_holm=float(next(adjusted))) for row in pair_tests]
    chi_square = [replace(row, p_holm=float(next(adjusted))) for row in chi_square]
    position = [replace(row, p_holm=float(next(adjusted))) for row in position]
    holm_note = f"p_holm: Holm-Bonferroni over all {sum(~np.isnan(all_p))} tests of the study."
    level = f"{config.confidence:.0%}"
    return StudyReport(
        config=config,
        exclusions=exclusions,
        shares=ResultTable(f"Choices per option ({level} Wilson intervals)", OptionShare, shares),
        pair_tests=ResultTable(
            "Pairwise exact binomial tests on decisive votes",
            PairTest,
            pair_tests,
            note=(
                "Ties ('both', 'neither') count as half a vote each. "
                if config.ties_as_half
                else "Ties excluded. "
            )
            + holm_note,
        ),
        chi_square=ResultTable(
            "Chi-square goodness of fit over all options", ChiSquareTest, chi_square, holm_note
        ),
        position_bias=ResultTable(
            "Position bias: left share of decisive votes", PositionBias, position, holm_note
        ),
        bradley_terry=ResultTable(
            f"Bradley-Terry strengths ({level} participant-bootstrap intervals, {config.bootstrap} resamples)",
            Strength,
            _bradley_terry(data, config),
            note="Only for questions comparing three or more arms.",
        ),
        agreement=ResultTable(
            "Inter-rater agreement",
            Agreement,
            _agreement(data),
            note="Items are trials (one image pair) rated by two or more participants; with few items it says little.",
        ),
    )


def _exclude(frame: pd.DataFrame, config: AnalysisConfig) -> tuple[Exclusions, pd.DataFrame]:
    participants = frame.groupby("participant", sort=False)
    failed = participants["participant_failed_attention"].any()
    unfinished = (~participants["participant_finished"].all()).sum() if "participant_finished" in frame else 0
    keep = (
        ~frame["participant_failed_attention"]
        if config.exclude_failed_attention
        else np.ones(len(frame), bool)
    )
    checks = frame["is_attention_check"]
    data = frame[keep & ~checks]
    excluded_participants = int(failed.sum()) if config.exclude_failed_attention else 0
    return (
        Exclusions(
            participants_total=int(len(failed)),
            participants_failed_attention=int(failed.sum()),
            participants_excluded=excluded_participants,
            participants_unfinished=int(unfinished),
            participants_analysed=int(data["participant"].nunique()),
            responses_total=int(len(frame)),
            attention_check_responses=int(checks.sum()),
            responses_excluded=int((~keep & ~checks).sum()),
            responses_analysed=int(len(data)),
            exclude_failed_attention=config.exclude_failed_attention,
        ),
        data,
    )


def _with_options(data: pd.DataFrame) -> pd.DataFrame:
    """Add the chosen option in arm terms and the trial's pair of arms in sorted order (shared categories)."""
    left = data["left_arm"].cat.remove_unused_categories()
    right = data["right_arm"].cat.remove_unused_categories()
    arms = sorted(set(left.cat.categories) | set(right.cat.categories))
    if set(arms) & set(EXTRA_OPTIONS):
        raise UserInputError(f"arms may not be named {list(EXTRA_OPTIONS)}: those names are the tie options")
    left_code = left.cat.set_categories(arms).cat.codes.to_numpy()
    right_code = right.cat.set_categories(arms).cat.codes.to_numpy()
    choice = data["choice"]
    option = np.select(
        [(choice == "left").to_numpy(), (choice == "right").to_numpy(), (choice == "both").to_numpy()],
        [left_code, right_code, len(arms)],
        len(arms) + 1,
    )
    vocabulary = [*arms, *EXTRA_OPTIONS]
    return data.assign(
        participant=data["participant"].cat.remove_unused_categories(),
        option=pd.Categorical.from_codes(option, categories=vocabulary),
        arm_a=pd.Categorical.from_codes(np.minimum(left_code, right_code), categories=vocabulary),
        arm_b=pd.Categorical.from_codes(np.maximum(left_code, right_code), categories=vocabulary),
    )


def _scopes(config: AnalysisConfig) -> Iterator[tuple[str, list[str]]]:
    yield ALL, ["question"]
    for column in config.breakdowns:
        yield column, ["question", column]


def _shares(data: pd.DataFrame, config: AnalysisConfig) -> list[OptionShare]:
    rows = []
    # One pass over the responses at the finest level; each scope then sums that small table.
    fine = data.groupby(["question", *config.breakdowns, "option"], observed=True).size().rename("count")
    fine = fine.reset_index()
    for scope, keys in _scopes(config):
        counts = fine.groupby([*keys, "option"], sort=True, observed=True)["count"].sum().reset_index()
        counts["n"] = counts.groupby(keys, observed=True)["count"].transform("sum")
        low, high = wilson_intervals(counts["count"], counts["n"], config.confidence)
        counts = counts.assign(share=counts["count"] / counts["n"], ci_low=low, ci_high=high)
        counts["group"] = counts[scope] if scope != ALL else ALL
        rows += [
            OptionShare(
                question=r.question,
                scope=scope,
                group=r.group,
                option=r.option,
                count=int(r.count),
                n=int(r.n),
                share=float(r.share),
                ci_low=float(r.ci_low),
                ci_high=float(r.ci_high),
            )
            for r in counts.itertuples(index=False)
        ]
    return rows


def _pair_tests(data: pd.DataFrame, config: AnalysisConfig) -> tuple[list[PairTest], list[ChiSquareTest]]:
    frame = data.assign(
        wins_a=data["option"] == data["arm_a"],
        wins_b=data["option"] == data["arm_b"],
        both=data["choice"] == "both",
        neither=data["choice"] == "neither",
    )
    # The options a question offered beyond the two arms, as seen in its responses.
    offered = frame.groupby("question", observed=True)[["both", "neither"]].any()
    extras = {q: [o for o in EXTRA_OPTIONS if offered.loc[q, o]] for q in offered.index}
    tests, chi = [], []
    tallies = ["wins_a", "wins_b", "both", "neither"]
    fine = frame.groupby(["question", *config.breakdowns, "arm_a", "arm_b"], observed=True)[tallies].sum()
    fine = fine.reset_index()
    for scope, keys in _scopes(config):
        sums = fine.groupby([*keys, "arm_a", "arm_b"], sort=True, observed=True)[tallies].sum().reset_index()
        ties = sums["both"] + sums["neither"] if config.ties_as_half else 0
        sums["votes"] = sums["wins_a"] + sums["wins_b"] + ties
        sums["count_a"] = sums["wins_a"] + ties / 2
        low, high = wilson_intervals(np.rint(sums["count_a"]), sums["votes"], config.confidence)
        sums = sums.assign(
            ci_low=low, ci_high=high, p_value=binomial_p_values(sums["count_a"], sums["votes"])
        )
        sums["group"] = sums[scope] if scope != ALL else ALL
        for r in sums.itertuples(index=False):
            tests.append(
                PairTest(
                    question=r.question,
                    scope=scope,
                    group=r.group,
                    arm_a=r.arm_a,
                    arm_b=r.arm_b,
                    wins_a=int(r.wins_a),
                    wins_b=int(r.wins_b),
                    both=int(r.both),
                    neither=int(r.neither),
                    votes=float(r.votes),
                    share_a=float(r.count_a / r.votes) if r.votes else math.nan,
                    ci_low=float(r.ci_low),
                    ci_high=float(r.ci_high),
                    p_value=float(r.p_value),
                )
            )
            observed = np.array(
                [r.wins_a, r.wins_b, *(getattr(r, o) for o in extras[r.question])], dtype=float
            )
            n = int(observed.sum())
            statistic, p_value = _chi_square_uniform(observed)
            chi.append(
                ChiSquareTest(
                    question=r.question,
                    scope=scope,
                    group=r.group,
                    arm_a=r.arm_a,
                    arm_b=r.arm_b,
                    options="/".join([r.arm_a, r.arm_b, *extras[r.question]]),
                    counts="/".join(str(int(v)) for v in observed),
                    n=n,
                    statistic=statistic,
                    dof=len(observed) - 1,
                    min_expected=n / len(observed),
                    p_value=p_value,
                )
            )
    return tests, chi


def _chi_square_uniform(observed: np.ndarray) -> tuple[float, float]:
    """Pearson's chi-square against equal shares (scipy.stats.chisquare's statistic, without its overhead)."""
    n = observed.sum()
    if n == 0:
        return math.nan, math.nan
    expected = n / len(observed)
    statistic = float(((observed - expected) ** 2).sum() / expected)
    return statistic, float(stats.chi2.sf(statistic, len(observed) - 1))


def _position_bias(data: pd.DataFrame, config: AnalysisConfig) -> list[PositionBias]:
    decisive = data[data["choice"].isin(("left", "right"))].assign(left=lambda f: f["choice"] == "left")
    per_question = decisive.groupby("question", sort=True, observed=True)["left"].agg(["sum", "size"])
    table = pd.concat(
        [pd.DataFrame({"sum": [decisive["left"].sum()], "size": [len(decisive)]}, index=[ALL]), per_question]
    )
    low, high = wilson_intervals(table["sum"], table["size"], config.confidence)
    p_values = binomial_p_values(table["sum"], table["size"])
    return [
        PositionBias(
            question=str(question),
            left=int(left),
            decisive=int(n),
            left_share=left / n if n else math.nan,
            ci_low=float(lo),
            ci_high=float(hi),
            p_value=float(p),
        )
        for question, left, n, lo, hi, p in zip(
            table.index, table["sum"], table["size"], low, high, p_values, strict=True
        )
    ]


def _bradley_terry(data: pd.DataFrame, config: AnalysisConfig) -> list[Strength]:
    rows = []
    alpha = 1 - config.confidence
    vocabulary = list(data["option"].cat.categories)
    for question, group in data.groupby("question", sort=True, observed=True):
        per_participant = _participant_wins(group, len(vocabulary) - len(EXTRA_OPTIONS), config.ties_as_half)
        total = per_participant.sum(axis=0)
        games = total + total.T
        present = np.flatnonzero(games.sum(axis=1) > 0)
        if len(present) < 3:
            continue
        strength = bradley_terry(total)
        low = high = np.full(len(strength), np.nan)
        if config.bootstrap:
            # Every question resamples the same participants (one seed), as one study's bootstrap should.
            samples = _bootstrap_strengths(
                per_participant, config.bootstrap, np.random.default_rng(config.seed)
            )
            with np.errstate(all="ignore"):
                low = np.nanpercentile(samples, 100 * alpha / 2, axis=0)
                high = np.nanpercentile(samples, 100 * (1 - alpha / 2), axis=0)
        ranks = stats.rankdata(-strength[present], method="min").astype(int)
        for rank, i in zip(ranks, present, strict=True):
            rows.append(
                Strength(
                    question=str(question),
                    arm=vocabulary[i],
                    rank=int(rank),
                    strength=float(strength[i]),
                    ci_low=float(low[i]),
                    ci_high=float(high[i]),
                    wins=float(total[i].sum()),
                    comparisons=float(games[i].sum()),
                )
            )
    return rows


def _participant_wins(group: pd.DataFrame, k: int, ties_as_half: bool) -> np.ndarray:
    """Win matrices per participant: [p, i, j] = votes of participant p for arm i over arm j."""
    participant = group["participant"].cat.codes.to_numpy().astype(np.int64)
    count = len(group["participant"].cat.categories)
    a = group["arm_a"].cat.codes.to_numpy().astype(np.int64)
    b = group["arm_b"].cat.codes.to_numpy().astype(np.int64)
    option = group["option"].cat.codes.to_numpy()
    weight_ab, weight_ba = (option == a).astype(float), (option == b).astype(float)
    if ties_as_half:
        tie = 0.5 * ((option != a) & (option != b))
        weight_ab, weight_ba = weight_ab + tie, weight_ba + tie
    size = count * k * k
    flat = np.bincount(participant * k * k + a * k + b, weights=weight_ab, minlength=size)
    flat += np.bincount(participant * k * k + b * k + a, weights=weight_ba, minlength=size)
    return flat.reshape(count, k, k)


def _bootstrap_strengths(per_participant: np.ndarray, resamples: int, rng: np.random.Generator) -> np.ndarray:
    """Bradley-Terry strengths of `resamples` resamples of participants (drawn with replacement)."""
    count, k = per_participant.shape[0], per_participant.shape[1]
    flat = per_participant.reshape(count, k * k)
    out = []
    for start in range(0, resamples, 100):
        size = min(100, resamples - start)
        # How many times each participant is drawn in each resample, in batches to bound memory.
        draws = rng.integers(0, count, size=(size, count)) + count * np.arange(size)[:, None]
        times = np.bincount(draws.ravel(), minlength=size * count).reshape(size, count).astype(float)
        out.append(bradley_terry((times @ flat).reshape(size, k, k)))
    return np.concatenate(out)


def _agreement(data: pd.DataFrame) -> list[Agreement]:
    rows = []
    for question, group in data.groupby("question", sort=True, observed=True):
        # An item is one stimulus pair: the trial when known (one image pair), else prompt x pair of arms.
        item = ["trial"] if "trial" in group.columns else ["prompt", "arm_a", "arm_b"]
        items = group.groupby([*item, "option"], observed=True).size()
        table = items.unstack(fill_value=0).to_numpy()
        rated = table.sum(axis=1)
        rows.append(
            Agreement(
                question=str(question),
                items=int((rated >= 2).sum()),
                ratings=int(rated[rated >= 2].sum()),
                fleiss_kappa=fleiss_kappa(table),
                krippendorff_alpha=krippendorff_alpha_nominal(table),
            )
        )
    return rows
