"""A study's report: the headline tests (one confirmatory family), then the exploratory and descriptive tables.

Input is a DataFrame with one row per response (see `analysis.stats.responses`); `analyze_responses` returns
a `StudyReport` whose tables render as text, as DataFrames and as JSON.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np
import pandas as pd

from analysis.stats.agreement import fleiss_kappa, krippendorff_alpha_nominal
from analysis.stats.bradley_terry import (
    MIN_PARTICIPANTS_FOR_INTERVALS,
    bootstrap_intervals,
    bootstrap_strengths,
    bradley_terry,
    not_estimable,
)
from analysis.stats.inference import clustered_share_tests, holm_adjust
from analysis.stats.responses import prepare_responses
from analysis.stats.sequential import Anytime, anytime_rows
from analysis.stats.tables import ResultTable, jsonable
from peftlab.errors import UserInputError

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
            "help": "Count 'both' and 'neither' as half a vote for each arm in the tests and Bradley-Terry."
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
    anytime_alpha: float | None = field(
        default=None,
        metadata={
            "help": "Level of the anytime-valid tests and confidence sequences (the plan's stopping alpha); "
            "None: 1 - confidence."
        },
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
        if self.anytime_alpha is not None and not 0 < self.anytime_alpha < 1:
            raise UserInputError(f"anytime alpha must be in (0, 1), got {self.anytime_alpha}; e.g. 0.05")

    @property
    def sequential_alpha(self) -> float:
        """The level of the anytime-valid results."""
        return 1 - self.confidence if self.anytime_alpha is None else self.anytime_alpha


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
    responses_same_arm: int
    responses_analysed: int
    exclude_failed_attention: bool

    def to_frame(self) -> pd.DataFrame:
        """One row per count."""
        return pd.DataFrame({"count": list(asdict(self).values())}, index=list(asdict(self)))

    def to_dict(self) -> dict[str, Any]:
        """The counts as a dict."""
        return jsonable(asdict(self))

    def to_text(self) -> str:
        """The counts as text."""
        title = "Exclusions"
        return f"{title}\n{'=' * len(title)}\n{self.to_frame().to_string()}\n"


@dataclass(frozen=True)
class Headline:
    """One confirmatory test: arm_a's share of the decisive votes between arm_a and arm_b on one question."""

    question: str
    arm_a: str
    arm_b: str
    participants: int
    votes: float
    ties: int
    share_a: float
    ci_low: float
    ci_high: float
    p_value: float
    p_holm: float
    method: str
    icc: float
    design_effect: float
    reading: str
    df: float = math.nan
    icc_upper: float = math.nan
    caution: str = ""
    anytime: Anytime | None = None


@dataclass(frozen=True)
class AnytimeRow:
    """A headline row's anytime-valid result: confidence sequence, e-value against 0.5, when it was decided."""

    question: str
    arm_a: str
    arm_b: str
    participants: int
    cs_low: float
    cs_high: float
    e_value: float
    decided_at: int | None


@dataclass(frozen=True)
class Breakdown:
    """An exploratory test of a pair within one landmark or prompt (unadjusted p)."""

    question: str
    scope: str
    group: str
    arm_a: str
    arm_b: str
    participants: int
    votes: float
    ties: int
    share_a: float
    ci_low: float
    ci_high: float
    p_value: float
    method: str


@dataclass(frozen=True)
class OptionShare:
    """How often one option (an arm, 'both' or 'neither') was chosen in a question, with a participant-level interval."""

    question: str
    option: str
    count: int
    n: int
    participants: int
    share: float
    ci_low: float
    ci_high: float
    method: str


@dataclass(frozen=True)
class PositionBias:
    """Share of decisive votes that went to the left image, tested against 0.5 (exploratory)."""

    question: str
    participants: int
    left: int
    decisive: int
    left_share: float
    ci_low: float
    ci_high: float
    p_value: float
    method: str


@dataclass(frozen=True)
class Strength:
    """A Bradley-Terry strength (the strengths of a question sum to 1), or why there is none."""

    question: str
    arm: str
    rank: float
    strength: float
    ci_low: float
    ci_high: float
    wins: float
    comparisons: float
    participants: int
    status: str


@dataclass(frozen=True)
class Agreement:
    """Inter-rater agreement on one question: items are trials (one image pair), categories the chosen options."""

    question: str
    items: int
    ratings: int
    fleiss_kappa: float
    krippendorff_alpha: float


@dataclass
class StudyReport:
    """Every table of a study's analysis, the headline first."""

    config: AnalysisConfig
    exclusions: Exclusions
    headline: ResultTable[Headline]
    anytime: ResultTable[AnytimeRow]
    shares: ResultTable[OptionShare]
    breakdowns: ResultTable[Breakdown]
    position_bias: ResultTable[PositionBias]
    bradley_terry: ResultTable[Strength]
    agreement: ResultTable[Agreement]

    def tables(self) -> dict[str, ResultTable]:
        """The result tables by name, in reading order."""
        return {
            "headline": self.headline,
            "anytime": self.anytime,
            "shares": self.shares,
            "breakdowns": self.breakdowns,
            "position_bias": self.position_bias,
            "bradley_terry": self.bradley_terry,
            "agreement": self.agreement,
        }

    def to_dict(self) -> dict[str, Any]:
        """The whole report as a JSON-able dict; `headline` is the list of confirmatory rows."""
        others = {name: table.to_dict() for name, table in self.tables().items() if name != "headline"}
        return {
            "headline": self.headline.row_dicts(),
            "headline_note": self.headline.note,
            "config": jsonable(
                {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self.config).items()}
            ),
            "exclusions": self.exclusions.to_dict(),
            **others,
        }

    def to_json(self) -> str:
        """The report as indented JSON."""
        return json.dumps(self.to_dict(), indent=2)

    def to_text(self) -> str:
        """The report as text tables, the headline and its anytime-valid results first."""
        tables = [table.to_text() for table in self.tables().values()]
        return "\n".join([*tables[:2], self.exclusions.to_text(), *tables[2:]])


def analyze_responses(frame: pd.DataFrame, config: AnalysisConfig | None = None) -> StudyReport:
    """The full report of a study from its responses."""
    config = config or AnalysisConfig()
    frame = prepare_responses(frame)
    exclusions, data = _exclude(frame, config)
    data = _with_options(data)
    level = f"{config.confidence:.0%}"
    headline = _pair_results(data, ["question"], config)
    headline["p_holm"] = holm_adjust(headline["p_value"].to_numpy())
    anytime = anytime_results(frame, config)
    headline_rows = [
        replace(row, anytime=anytime.get((row.question, row.arm_a, row.arm_b)))
        for row in (_headline(r) for r in headline.itertuples(index=False))
    ]
    alpha = config.sequential_alpha
    breakdowns, breakdown_note = _breakdowns(data, config)
    return StudyReport(
        config=config,
        exclusions=exclusions,
        headline=ResultTable(
            f"Headline: which arm is preferred ({level} intervals, participant-level inference)",
            Headline,
            headline_rows,
            note=(
                "Confirmatory: one test per question and pair of arms; quote p_holm (Holm over these "
                f"{int(headline['p_value'].notna().sum())} tests only). "
                + ("Ties count as half a vote for each arm." if config.ties_as_half else "Ties excluded.")
            ),
            hidden=("reading", "caution", "anytime"),
            lines=[row.reading for row in headline_rows]
            + [row.caution for row in headline_rows if row.caution],
        ),
        anytime=ResultTable(
            f"Anytime-valid: {1 - alpha:.0%} confidence sequences and e-values against 0.5 (valid at every look)",
            AnytimeRow,
            [
                AnytimeRow(row.question, row.arm_a, row.arm_b, **asdict(row.anytime))
                for row in headline_rows
                if row.anytime is not None
            ],
            note=(
                "Participants in finishing order; decided_at: the participant count at which the test, "
                f"corrected over these {len(anytime)} rows (e-Holm at {alpha:g}), first rejected 0.5 "
                "(empty: not yet). Valid however often the results were looked at."
            ),
        ),
        shares=ResultTable(
            f"Descriptive: choices per option ({level} participant-level intervals)",
            OptionShare,
            _shares(data, config),
        ),
        breakdowns=ResultTable(
            "Exploratory: preference per landmark and prompt (unadjusted p)",
            Breakdown,
            breakdowns,
            note="Exploratory: not part of the Holm family; do not claim significance from these. "
            + breakdown_note,
        ),
        position_bias=ResultTable(
            "Exploratory: position bias, left share of decisive votes (unadjusted p)",
            PositionBias,
            _position_bias(data, config),
        ),
        bradley_terry=ResultTable(
            f"Bradley-Terry strengths ({level} participant-bootstrap intervals, {config.bootstrap} resamples)",
            Strength,
            _bradley_terry(data, config),
            note=(
                "Only for questions comparing three or more arms. Intervals: t on the logit with a robust "
                f"bootstrap standard error, from {MIN_PARTICIPANTS_FOR_INTERVALS} participants up."
            ),
        ),
        agreement=ResultTable(
            "Inter-rater agreement",
            Agreement,
            _agreement(data),
            note="Items are trials (one image pair) rated by two or more participants; with few items it says little.",
        ),
    )


def anytime_results(frame: pd.DataFrame, config: AnalysisConfig) -> dict[tuple[str, str, str], Anytime]:
    """Anytime-valid results per headline row (question, arm_a, arm_b), the participant being the unit.

    Each finished participant's share of decisive votes for arm_a is one observation; participants are taken
    in finishing order (`participant_finished_at` when the frame has it, else their last `answered_at`).
    """
    frame = prepare_responses(frame)
    if "participant_finished" in frame:
        frame = frame[frame["participant_finished"].to_numpy()]
    _, data = _exclude(frame, config)
    data = _with_options(data)
    order = _finishing_order(data)
    tallies = (
        data.groupby(["question", "arm_a", "arm_b", "participant"], observed=True, sort=True)[
            ["wins_a", "wins_b", "ties"]
        ]
        .sum()
        .reset_index()
    )
    ties = tallies["ties"].to_numpy(float) if config.ties_as_half else 0.0
    wins_a = tallies["wins_a"].to_numpy(float) + ties / 2
    votes = wins_a + tallies["wins_b"].to_numpy(float) + ties / 2
    tallies = tallies.assign(
        share=np.divide(wins_a, votes, out=np.zeros_like(votes), where=votes > 0),
        look=tallies["participant"].map(order).astype(int).to_numpy(),
    )[votes > 0].sort_values("look", kind="stable")
    cells = list(tallies.groupby(["question", "arm_a", "arm_b"], observed=True, sort=True))
    results = anytime_rows(
        [group["look"].to_numpy() for _, group in cells],
        [group["share"].to_numpy() for _, group in cells],
        len(order),
        config.sequential_alpha,
    )
    return {tuple(map(str, key)): result for (key, _), result in zip(cells, results, strict=True)}


def _finishing_order(data: pd.DataFrame) -> pd.Series:
    """Each analysed participant's place (1-based) in finishing order; ties keep the frame's order."""
    participants = data.groupby("participant", observed=True, sort=False)
    for column in ("participant_finished_at", "answered_at"):
        if column in data and data[column].notna().all():
            finished = pd.to_datetime(participants[column].max(), utc=True, format="ISO8601")
            break
    else:
        finished = pd.Series(np.arange(participants.ngroups), index=data["participant"].unique())
    return finished.rank(method="first").astype(int)


def _exclude(frame: pd.DataFrame, config: AnalysisConfig) -> tuple[Exclusions, pd.DataFrame]:
    participants = frame.groupby("participant", sort=False, observed=True)
    failed = participants["participant_failed_attention"].any()
    unfinished = (~participants["participant_finished"].all()).sum() if "participant_finished" in frame else 0
    keep = (
        ~frame["participant_failed_attention"].to_numpy()
        if config.exclude_failed_attention
        else np.ones(len(frame), bool)
    )
    checks = frame["is_attention_check"].to_numpy()
    # A trial showing one arm on both sides compares nothing (and would count each vote for both sides).
    same_arm = (frame["left_arm"].astype(str) == frame["right_arm"].astype(str)).to_numpy()
    data = frame[keep & ~checks & ~same_arm]
    return (
        Exclusions(
            participants_total=int(len(failed)),
            participants_failed_attention=int(failed.sum()),
            participants_excluded=int(failed.sum()) if config.exclude_failed_attention else 0,
            participants_unfinished=int(unfinished),
            participants_analysed=int(data["participant"].nunique()),
            responses_total=int(len(frame)),
            attention_check_responses=int(checks.sum()),
            responses_excluded=int((~keep & ~checks).sum()),
            responses_same_arm=int((keep & ~checks & same_arm).sum()),
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
    arm_a, arm_b = np.minimum(left_code, right_code), np.maximum(left_code, right_code)
    return data.assign(
        participant=data["participant"].cat.remove_unused_categories(),
        question=data["question"].cat.remove_unused_categories(),
        option=pd.Categorical.from_codes(option, categories=vocabulary),
        arm_a=pd.Categorical.from_codes(arm_a, categories=vocabulary),
        arm_b=pd.Categorical.from_codes(arm_b, categories=vocabulary),
        wins_a=option == arm_a,
        wins_b=option == arm_b,
        ties=option >= len(arms),
        left=(choice == "left").to_numpy(),
    )


def _pair_results(data: pd.DataFrame, keys: list[str], config: AnalysisConfig) -> pd.DataFrame:
    """Per cell of `keys` x pair of arms: the counts and the participant-level test of arm_a's share."""
    cells = [*keys, "arm_a", "arm_b"]
    tallies = (
        data.groupby([*cells, "participant"], observed=True, sort=True)[["wins_a", "wins_b", "ties"]]
        .sum()
        .reset_index()
    )
    cell = tallies.groupby(cells, observed=True, sort=True).ngroup().to_numpy()
    out = tallies.groupby(cells, observed=True, sort=True)[["wins_a", "wins_b", "ties"]].sum().reset_index()
    ties = tallies["ties"].to_numpy(float) if config.ties_as_half else 0.0
    wins_a = tallies["wins_a"].to_numpy(float)
    votes = wins_a + tallies["wins_b"].to_numpy(float) + ties
    voted = votes > 0
    participant_names = tallies["participant"].astype(str).to_numpy()[voted]
    result = clustered_share_tests(
        cell[voted],
        (wins_a + ties / 2)[voted] if config.ties_as_half else wins_a[voted],
        votes[voted],
        len(out),
        config.confidence,
        wins_squared=(wins_a + ties / 4)[voted] if config.ties_as_half else None,
    )
    pivot = result.pivot_row
    return out.assign(
        participants=result.participants.astype(int),
        votes=result.votes,
        share_a=result.share,
        ci_low=result.ci_low,
        ci_high=result.ci_high,
        p_value=result.p_value,
        method=result.method,
        icc=result.icc,
        design_effect=result.design_effect,
        df=result.df,
        icc_upper=result.icc_upper,
        pivot=np.where(pivot >= 0, participant_names[np.maximum(pivot, 0)], ""),
        pivot_p=result.pivot_p,
    )


def _headline(r: Any) -> Headline:
    row = Headline(
        question=str(r.question),
        arm_a=str(r.arm_a),
        arm_b=str(r.arm_b),
        participants=int(r.participants),
        votes=float(r.votes),
        ties=int(r.ties),
        share_a=float(r.share_a),
        ci_low=float(r.ci_low),
        ci_high=float(r.ci_high),
        p_value=float(r.p_value),
        p_holm=float(r.p_holm),
        method=str(r.method),
        icc=float(r.icc),
        design_effect=float(r.design_effect),
        reading="",
        df=float(r.df),
        icc_upper=float(r.icc_upper),
    )
    return replace(row, reading=plain_reading(row), caution=caution(row, str(r.pivot), float(r.pivot_p)))


# The fewest participants with which an exact sign test over participants can reach p < 0.05 (2 / 2^n).
MIN_PARTICIPANTS = 6


def caution(row: Headline, pivot: str, pivot_p: float) -> str:
    """Why this row's test should not be trusted ('' when nothing calls for caution).

    Under MIN_PARTICIPANTS no test makes sense without assuming how participants' shares are spread
    (a unanimous sign test cannot reach 0.05); from there, a verdict that one participant's removal
    reverses turns on that participant.
    """
    label = f"{row.arm_a} vs {row.arm_b} for {row.question}"
    if 0 < row.participants < MIN_PARTICIPANTS:
        return (
            f"Caution, {label}: only {row.participants} participant(s), too few for any test to be trusted "
            f"(even if all leaned one way, an exact sign test over participants gives p = "
            f"{2 * 0.5**row.participants:.2g}); recruit at least {MIN_PARTICIPANTS}."
        )
    if pivot and not math.isnan(pivot_p) and (pivot_p < 0.05) != (row.p_value < 0.05):
        return (
            f"Caution, {label}: the verdict turns on participant {pivot}, who carries the most weight: "
            f"without them p = {pivot_p:.2g} (with them {row.p_value:.2g})."
        )
    return ""


def plain_reading(row: Headline) -> str:
    """One sentence a reader can quote: the preferred arm, its share with interval, p and participants."""
    if not row.votes or math.isnan(row.share_a):
        return f"{row.arm_a} vs {row.arm_b} for {row.question}: no decisive votes."
    winner, loser, share, low, high = row.arm_a, row.arm_b, row.share_a, row.ci_low, row.ci_high
    if share < 0.5:
        winner, loser, share, low, high = row.arm_b, row.arm_a, 1 - share, 1 - high, 1 - low
    verdict = "preferred over" if row.p_holm < 0.05 else "not clearly preferred over"
    return (
        f"{winner} {verdict} {loser} for {row.question}: {share:.0%} [{low:.0%}, {high:.0%}], "
        f"p = {row.p_value:.2g} (Holm {row.p_holm:.2g}), {row.participants} participants."
    )


def _breakdowns(data: pd.DataFrame, config: AnalysisConfig) -> tuple[list[Breakdown], str]:
    scopes = list(config.breakdowns)
    note = ""
    if set(scopes) == set(BREAKDOWNS):
        pairs = data.groupby(["landmark", "prompt"], observed=True).ngroups
        if pairs == data["landmark"].nunique() == data["prompt"].nunique():
            scopes.remove("prompt")
            note = "Each landmark has exactly one prompt, so the per-prompt breakdown is the per-landmark one (shown once)."
    rows = []
    for scope in scopes:
        frame = _pair_results(data, ["question", scope], config)
        rows += [
            Breakdown(
                question=str(r.question),
                scope=scope,
                group=str(getattr(r, scope)),
                arm_a=str(r.arm_a),
                arm_b=str(r.arm_b),
                participants=int(r.participants),
                votes=float(r.votes),
                ties=int(r.ties),
                share_a=float(r.share_a),
                ci_low=float(r.ci_low),
                ci_high=float(r.ci_high),
                p_value=float(r.p_value),
                method=str(r.method),
            )
            for r in frame.itertuples(index=False)
        ]
    return rows, note


def _shares(data: pd.DataFrame, config: AnalysisConfig) -> list[OptionShare]:
    vocabulary = list(data["option"].cat.categories)
    questions = list(data["question"].cat.categories)
    q, v = data["question"].cat.codes.to_numpy(np.int64), len(vocabulary)
    p, n_p = data["participant"].cat.codes.to_numpy(np.int64), len(data["participant"].cat.categories)
    option = data["option"].cat.codes.to_numpy(np.int64)
    # Counts per question x participant x option, on integer codes (a crosstab is ten times slower).
    size = len(questions) * n_p * v
    counts = np.bincount((q * n_p + p) * v + option, minlength=size).reshape(len(questions), n_p, v)
    shown = np.zeros((len(questions), v), bool)
    shown[q, data["arm_a"].cat.codes.to_numpy()] = True
    shown[q, data["arm_b"].cat.codes.to_numpy()] = True
    # Every arm shown is listed, even if never chosen; a tie option only if anyone chose it.
    chosen = counts.sum(axis=1) > 0
    listed = shown | (chosen & (np.arange(v) >= v - len(EXTRA_OPTIONS)))
    group, wins, votes, cells = [], [], [], []
    for qi, oi in zip(*np.nonzero(listed), strict=True):
        answered = counts[qi].sum(axis=1)
        rows = np.flatnonzero(answered > 0)
        group.append(np.full(len(rows), len(cells)))
        wins.append(counts[qi, rows, oi].astype(float))
        votes.append(answered[rows].astype(float))
        cells.append((questions[qi], vocabulary[oi]))
    if not cells:
        return []
    result = clustered_share_tests(
        np.concatenate(group), np.concatenate(wins), np.concatenate(votes), len(cells), config.confidence
    )
    return [
        OptionShare(
            question=str(question),
            option=option_name,
            count=int(wins[i].sum()),
            n=int(result.votes[i]),
            participants=int(result.participants[i]),
            share=float(wins[i].sum() / result.votes[i]),
            ci_low=float(result.ci_low[i]),
            ci_high=float(result.ci_high[i]),
            method=str(result.method[i]),
        )
        for i, (question, option_name) in enumerate(cells)
    ]


def _position_bias(data: pd.DataFrame, config: AnalysisConfig) -> list[PositionBias]:
    decisive = data[~data["ties"]]
    per_question = decisive.groupby(["question", "participant"], observed=True, sort=True)["left"].agg(
        ["sum", "size"]
    )
    overall = decisive.groupby("participant", observed=True, sort=True)["left"].agg(["sum", "size"])
    questions = list(per_question.index.get_level_values(0).unique())
    labels = [ALL, *map(str, questions)]
    group = np.concatenate(
        [
            np.zeros(len(overall), int),
            1 + per_question.index.get_level_values(0).map(questions.index).to_numpy(),
        ]
    ).astype(np.int64)
    left = np.concatenate([overall["sum"], per_question["sum"]]).astype(float)
    size = np.concatenate([overall["size"], per_question["size"]]).astype(float)
    result = clustered_share_tests(group, left, size, len(labels), config.confidence)
    lefts = np.bincount(group, weights=left, minlength=len(labels))
    return [
        PositionBias(
            question=label,
            participants=int(result.participants[i]),
            left=int(lefts[i]),
            decisive=int(result.votes[i]),
            left_share=float(lefts[i] / result.votes[i]) if result.votes[i] else math.nan,
            ci_low=float(result.ci_low[i]),
            ci_high=float(result.ci_high[i]),
            p_value=float(result.p_value[i]),
            method=str(result.method[i]),
        )
        for i, label in enumerate(labels)
        if result.votes[i]
    ]


def _bradley_terry(data: pd.DataFrame, config: AnalysisConfig) -> list[Strength]:
    rows = []
    vocabulary = list(data["option"].cat.categories)
    arms = vocabulary[: -len(EXTRA_OPTIONS)]
    for question, group in data.groupby("question", sort=True, observed=True):
        per_participant = _participant_wins(group, len(arms), config.ties_as_half)
        per_participant = per_participant[per_participant.sum(axis=(1, 2)) > 0]
        total = per_participant.sum(axis=0)
        games = total + total.T
        present = np.flatnonzero(games.sum(axis=1) > 0)
        if len(present) < 3:
            continue
        count = len(per_participant)
        # Judged on the decisive votes: a tie counted as half a win each way is no evidence of which arm is
        # stronger, yet it would make an arm that won every decisive comparison look estimable.
        decisive = _participant_wins(group, len(arms), False).sum(axis=0)
        reason = not_estimable(decisive, arms, count)
        if reason and config.ties_as_half and not not_estimable(total, arms, count):
            reason += " in the decisive votes; ties counted as half do not make it finite"
        strength = np.full(len(arms), np.nan) if reason else bradley_terry(total)
        low = high = np.full(len(arms), np.nan)
        status = f"not estimable: {reason}" if reason else ""
        if not reason and config.bootstrap:
            if count >= MIN_PARTICIPANTS_FOR_INTERVALS:
                # Every question resamples with the same seed, as one study's bootstrap should.
                samples = bootstrap_strengths(
                    per_participant, config.bootstrap, np.random.default_rng(config.seed)
                )
                low, high = bootstrap_intervals(samples, strength, count, config.confidence)
            else:
                status = (
                    f"no interval: {count} participants (intervals need {MIN_PARTICIPANTS_FOR_INTERVALS})"
                )
        ranks = pd.Series(-strength[present]).rank(method="min").to_numpy()
        for rank, i in zip(ranks, present, strict=True):
            rows.append(
                Strength(
                    question=str(question),
                    arm=arms[i],
                    rank=float(rank),
                    strength=float(strength[i]),
                    ci_low=float(low[i]),
                    ci_high=float(high[i]),
                    wins=float(total[i].sum()),
                    comparisons=float(games[i].sum()),
                    participants=count,
                    status=status,
                )
            )
    return rows


def _participant_wins(group: pd.DataFrame, k: int, ties_as_half: bool) -> np.ndarray:
    """Win matrices per participant: [p, i, j] = votes of participant p for arm i over arm j."""
    participant = group["participant"].cat.codes.to_numpy().astype(np.int64)
    count = len(group["participant"].cat.categories)
    a = group["arm_a"].cat.codes.to_numpy().astype(np.int64)
    b = group["arm_b"].cat.codes.to_numpy().astype(np.int64)
    weight_ab, weight_ba = group["wins_a"].to_numpy(float), group["wins_b"].to_numpy(float)
    if ties_as_half:
        tie = 0.5 * group["ties"].to_numpy(float)
        weight_ab, weight_ba = weight_ab + tie, weight_ba + tie
    size = count * k * k
    flat = np.bincount(participant * k * k + a * k + b, weights=weight_ab, minlength=size)
    flat += np.bincount(participant * k * k + b * k + a, weights=weight_ba, minlength=size)
    return flat.reshape(count, k, k)


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
