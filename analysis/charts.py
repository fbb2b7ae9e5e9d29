"""The report's charts with matplotlib's Agg backend (pure, no Django): each returns PNG or SVG bytes."""

from __future__ import annotations

import io
from collections.abc import Callable

import matplotlib

matplotlib.use("Agg")  # no display on a server; must precede pyplot's import

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from analysis.stats import StudyReport  # noqa: E402
from peftlab.errors import UserInputError  # noqa: E402

CHART_FORMATS = ("png", "svg")


def _bars(ax, frame: pd.DataFrame, category: str, series: str, value: str) -> None:
    """Grouped bars of `value` by `category` (x) and `series` (colour), with CI whiskers."""
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
        ax.bar(
            x + (i - (len(names) - 1) / 2) * width,
            heights,
            width,
            yerr=np.nan_to_num(errors),
            capsize=3,
            label=name,
        )
    ax.set_xticks(
        x,
        categories,
        rotation=30 if len(categories) > 4 else 0,
        ha="right" if len(categories) > 4 else "center",
    )
    ax.set_ylim(0, 1)
    ax.legend(fontsize=8)


def _empty(figure: Figure, message: str) -> Figure:
    figure.text(0.5, 0.5, message, ha="center", va="center")
    return figure


def preferences_chart(report: StudyReport) -> Figure:
    """Share of each option per question, with Wilson whiskers."""
    figure = Figure(figsize=(7, 4), layout="constrained")
    shares = report.shares.to_frame()
    if shares.empty:
        return _empty(figure, "no responses yet")
    ax = figure.add_subplot()
    _bars(ax, shares, "question", "option", "share")
    ax.set_ylabel(f"share of responses ({report.config.confidence:.0%} CI)")
    ax.set_title("Preferences per question")
    return figure


def landmarks_chart(report: StudyReport) -> Figure:
    """arm_a's share of decisive votes per landmark (exploratory), one panel per question."""
    frame = report.breakdowns.to_frame()
    frame = frame[frame["scope"] == "landmark"].assign(pair=lambda f: f["arm_a"] + " vs " + f["arm_b"])
    questions = list(dict.fromkeys(frame["question"]))
    figure = Figure(figsize=(8, 3 * max(len(questions), 1)), layout="constrained")
    if frame.empty:
        return _empty(figure, "no per-landmark breakdown")
    for index, question in enumerate(questions, start=1):
        ax = figure.add_subplot(len(questions), 1, index)
        _bars(ax, frame[frame["question"] == question], "group", "pair", "share_a")
        ax.axhline(0.5, color="grey", linestyle="--", linewidth=1)
        ax.set_title(f"{question} (exploratory)")
        ax.set_ylabel("first arm's share")
    return figure


def position_bias_chart(report: StudyReport) -> Figure:
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
    ax.set_xticks(x, frame["question"])
    ax.set_ylim(0, 1)
    ax.set_ylabel("left share of decisive votes")
    ax.set_title("Position bias")
    return figure


def strengths_chart(report: StudyReport) -> Figure:
    """Bradley-Terry strengths per question with bootstrap intervals."""
    figure = Figure(figsize=(7, 4), layout="constrained")
    frame = report.bradley_terry.to_frame().dropna(subset=["strength"])
    if frame.empty:
        return _empty(figure, "Bradley-Terry needs three or more arms and an estimable fit")
    ax = figure.add_subplot()
    _bars(ax, frame, "question", "arm", "strength")
    ax.set_ylabel("strength (sums to 1)")
    ax.set_title("Bradley-Terry strengths")
    return figure


CHARTS: dict[str, Callable[[StudyReport], Figure]] = {
    "preferences": preferences_chart,
    "landmarks": landmarks_chart,
    "position-bias": position_bias_chart,
    "bradley-terry": strengths_chart,
}


def render_chart(report: StudyReport, name: str, fmt: str) -> bytes:
    """The chart `name` of the report as PNG or SVG bytes."""
    if name not in CHARTS:
        raise UserInputError(f"unknown chart {name!r}; choose one of {', '.join(CHARTS)}")
    if fmt not in CHART_FORMATS:
        raise UserInputError(f"unknown chart format {fmt!r}; choose png or svg")
    buffer = io.BytesIO()
    CHARTS[name](report).savefig(buffer, format=fmt, dpi=120)
    return buffer.getvalue()
