"""The report's charts with matplotlib's Agg backend (pure, no Django): each returns PNG or SVG bytes.

Every chart takes the report and the display names (arm and question labels). SVGs keep their text as text
(editable in a paper's figure) and the forest plot's rows carry ids (`forest-row-<i>`) that tests check.
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable
from dataclasses import dataclass

import matplotlib

matplotlib.use("Agg")  # no display on a server; must precede pyplot's import

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from analysis.stats import ALL, StudyReport  # noqa: E402
from analysis.stats.display import DisplayNames, interval, percent  # noqa: E402
from peftlab.errors import UserInputError  # noqa: E402

CHART_FORMATS = ("png", "svg")


def _bars(ax, frame: pd.DataFrame, category: str, series: str, value: str, shares: bool = True) -> None:
    """Grouped bars of `value` by `category` (x) and `series` (colour), with CI whiskers; `shares` in percent."""
    categories = list(dict.fromkeys(frame[category]))
    names = list(dict.fromkeys(frame[series]))
    width = 0.8 / max(len(names), 1)
    x = np.arange(len(categories))
    for i, name in enumerate(names):
        part = frame[frame[series] == name].set_index(category).reindex(categories)
        heights = part[value].to_numpy(dtype=float)
        # Whiskers never below 0: an interval of 0/n or n/n ends exactly at the estimate.
        errors = np.clip(
            np.vstack([heights - part["ci_low"], part["ci_high"] - heights]).astype(float), 0, None
        )
        bars = ax.bar(
            x + (i - (len(names) - 1) / 2) * width,
            heights,
            width,
            yerr=np.nan_to_num(errors),
            capsize=3,
            label=name,
            edgecolor="black",
            linewidth=0.6,
        )
        # A bar of 0 has no height: its value printed at the baseline shows it is there and is zero.
        labels = [percent(h) if shares else f"{h:.2f}" for h in heights]
        ax.bar_label(bars, labels=labels, fontsize=7, padding=2)
    ax.set_xticks(
        x,
        categories,
        rotation=30 if len(categories) > 4 else 0,
        ha="right" if len(categories) > 4 else "center",
    )
    ax.set_ylim(0, 1.12)
    ticks = np.linspace(0, 1, 6)
    ax.set_yticks(ticks, [percent(t) if shares else f"{t:.1f}" for t in ticks])
    ax.legend(fontsize=8)


def _empty(figure: Figure, message: str) -> Figure:
    figure.text(0.5, 0.5, message, ha="center", va="center", wrap=True)
    return figure


@dataclass(frozen=True)
class ForestRow:
    """One row of the forest plot: a headline row's label, share of the first arm, interval and participants."""

    id: str
    label: str
    question: str
    arm_a: str
    arm_b: str
    share_a: float
    ci_low: float
    ci_high: float
    participants: int


def forest_rows(report: StudyReport, names: DisplayNames) -> list[ForestRow]:
    """The forest plot's rows, top to bottom: one per headline row (question x pair), in the headline's order."""
    return [
        ForestRow(
            id=f"forest-row-{index}",
            label=f"{names.question(row.question)}: {names.pair(row.arm_a, row.arm_b)}",
            question=row.question,
            arm_a=row.arm_a,
            arm_b=row.arm_b,
            share_a=row.share_a,
            ci_low=row.ci_low,
            ci_high=row.ci_high,
            participants=row.participants,
        )
        for index, row in enumerate(report.headline.rows)
    ]


def forest_chart(report: StudyReport, names: DisplayNames) -> Figure:
    """The headline as a forest plot: the first arm's share with its interval per question x pair, against 50 %."""
    rows = forest_rows(report, names)
    margins = [f"{percent(r.share_a)} {interval(r.ci_low, r.ci_high)}, n = {r.participants}" for r in rows]
    # Wide enough that long display names leave the plot itself at least about 4 inches.
    text = max((len(r.label) for r in rows), default=0) + max((len(m) for m in margins), default=0)
    figure = Figure(
        figsize=(max(8.0, 4.5 + 0.075 * text), 1.2 + 0.45 * max(len(rows), 1)), layout="constrained"
    )
    if not rows:
        return _empty(figure, "no headline results yet: no decisive votes")
    ax = figure.add_subplot()
    ax.patch.set_gid("forest-axes")
    y = np.arange(len(rows))[::-1]
    for position, row in zip(y, rows, strict=True):
        if math.isnan(row.share_a):
            ax.text(0.5, position, "no decisive votes", ha="center", va="center", fontsize=8, color="grey")
            continue
        (line,) = ax.plot(
            [row.ci_low, row.ci_high], [position, position], color="#2f5fd0", linewidth=2, clip_on=False
        )
        line.set_gid(row.id)
        (point,) = ax.plot([row.share_a], [position], "s", color="#1d2433", markersize=6, clip_on=False)
        point.set_gid(f"{row.id}-share")
    half = ax.axvline(0.5, color="grey", linestyle="--", linewidth=1)
    half.set_gid("forest-half")
    ax.set_xlim(0, 1)
    ax.set_ylim(-0.7, len(rows) - 0.3)
    ticks = np.linspace(0, 1, 5)
    ax.set_xticks(ticks, [percent(t) for t in ticks])
    ax.set_yticks(y, [row.label for row in rows])
    # n participants on the right, outside the axes, one per row.
    right = ax.secondary_yaxis("right")
    right.set_yticks(y, margins)
    right.tick_params(length=0)
    ax.set_xlabel(
        f"first arm's share of decisive votes ({report.config.confidence:.0%} interval); 50% = no preference"
    )
    return figure


def preferences_chart(report: StudyReport, names: DisplayNames) -> Figure:
    """Share of each option per question, with Wilson whiskers (descriptive: all pairs pooled)."""
    figure = Figure(figsize=(7, 4), layout="constrained")
    shares = report.shares.to_frame()
    if shares.empty:
        return _empty(figure, "no responses yet")
    shares = shares.assign(
        question=shares["question"].map(names.question), option=shares["option"].map(names.arm)
    )
    ax = figure.add_subplot()
    _bars(ax, shares, "question", "option", "share")
    ax.set_ylabel(f"share of responses ({report.config.confidence:.0%} CI)")
    ax.set_title("Choices per question (descriptive, all pairs pooled)")
    return figure


def landmarks_chart(report: StudyReport, names: DisplayNames) -> Figure:
    """arm_a's share of decisive votes per landmark (exploratory), one panel per question."""
    frame = report.breakdowns.to_frame()
    frame = frame[frame["scope"] == "landmark"]
    frame = frame.assign(pair=[names.pair(a, b) for a, b in zip(frame["arm_a"], frame["arm_b"], strict=True)])
    questions = list(dict.fromkeys(frame["question"]))
    figure = Figure(figsize=(8, 3 * max(len(questions), 1)), layout="constrained")
    if frame.empty:
        return _empty(figure, "no per-landmark breakdown")
    for index, question in enumerate(questions, start=1):
        ax = figure.add_subplot(len(questions), 1, index)
        _bars(ax, frame[frame["question"] == question], "group", "pair", "share_a")
        ax.axhline(0.5, color="grey", linestyle="--", linewidth=1)
        ax.set_title(f"{names.question(question)} (exploratory)")
        ax.set_ylabel("first arm's share")
    return figure


def position_bias_chart(report: StudyReport, names: DisplayNames) -> Figure:
    """Left share of decisive votes per question, against the 0.5 of no bias."""
    figure = Figure(figsize=(6, 3.5), layout="constrained")
    frame = report.position_bias.to_frame().dropna(subset=["left_share"])
    if frame.empty:
        return _empty(figure, "no decisive votes yet")
    ax = figure.add_subplot()
    x = np.arange(len(frame))
    errors = np.clip(
        np.vstack([frame["left_share"] - frame["ci_low"], frame["ci_high"] - frame["left_share"]]).astype(
            float
        ),
        0,
        None,
    )
    ax.errorbar(x, frame["left_share"], yerr=errors, fmt="o", capsize=4)
    ax.axhline(0.5, color="grey", linestyle="--", linewidth=1)
    ax.set_xticks(x, [names.question(q) if q != ALL else "all questions" for q in frame["question"]])
    ax.set_ylim(0, 1)
    ax.set_yticks(np.linspace(0, 1, 6), [percent(t) for t in np.linspace(0, 1, 6)])
    ax.set_ylabel("left share of decisive votes")
    ax.set_title("Position bias (exploratory)")
    return figure


def strengths_chart(report: StudyReport, names: DisplayNames) -> Figure:
    """Bradley-Terry strengths per question with bootstrap intervals, or the reason there are none."""
    figure = Figure(figsize=(7, 4), layout="constrained")
    frame = report.bradley_terry.to_frame().dropna(subset=["strength"])
    if frame.empty:
        return _empty(figure, leaderboard_reason(report, names) or "no Bradley-Terry strengths")
    frame = frame.assign(question=frame["question"].map(names.question), arm=frame["arm"].map(names.arm))
    ax = figure.add_subplot()
    _bars(ax, frame, "question", "arm", "strength", shares=False)
    ax.set_ylabel("strength (sums to 1)")
    ax.set_title("Bradley-Terry strengths")
    return figure


def leaderboard_reason(report: StudyReport, names: DisplayNames) -> str:
    """Why some question has no Bradley-Terry leaderboard, in one line ("" when every question has one)."""
    arms = sorted({arm for row in report.headline.rows for arm in (row.arm_a, row.arm_b)})
    if len(arms) < 3:
        shown = ", ".join(names.arm(arm) for arm in arms) or "none"
        return (
            f"No Bradley-Terry leaderboard: it ranks three or more arms, and this study compares "
            f"{len(arms)} ({shown}); the headline's pairwise test is the whole comparison."
        )
    reasons = []
    ranked = {row.question for row in report.bradley_terry.rows}
    for question in dict.fromkeys(row.question for row in report.headline.rows):
        statuses = {row.status for row in report.bradley_terry.rows if row.question == question}
        if question not in ranked:
            reasons.append(f"{names.question(question)}: fewer than three arms have votes")
        elif any(status.startswith("not estimable") for status in statuses):
            reasons.append(f"{names.question(question)}: {next(iter(statuses))}")
    return "; ".join(reasons)


CHARTS: dict[str, Callable[[StudyReport, DisplayNames], Figure]] = {
    "forest": forest_chart,
    "preferences": preferences_chart,
    "landmarks": landmarks_chart,
    "position-bias": position_bias_chart,
    "bradley-terry": strengths_chart,
}


def render_chart(report: StudyReport, name: str, fmt: str, names: DisplayNames | None = None) -> bytes:
    """The chart `name` of the report as PNG or SVG bytes (SVG text stays text)."""
    if name not in CHARTS:
        raise UserInputError(f"unknown chart {name!r}; choose one of {', '.join(CHARTS)}")
    if fmt not in CHART_FORMATS:
        raise UserInputError(f"unknown chart format {fmt!r}; choose png or svg")
    buffer = io.BytesIO()
    with matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": "peftlab"}):
        CHARTS[name](report, names or DisplayNames()).savefig(buffer, format=fmt, dpi=150)
    return buffer.getvalue()
