"""A study's report as a reader sees it: figures, Methods and Results, readable tables, as a page or one file.

`report_context` gathers everything the report shows from one `StudyReport` (so the text, tables and figures
agree); `report_html` renders it as a self-contained HTML document (figures embedded as data URIs, no links
out), which `analyze_study --report DIR` writes and which opens offline.
"""

from __future__ import annotations

import base64
import math
from dataclasses import dataclass
from typing import Any

from django.template.loader import render_to_string

from analysis.charts import CHARTS, leaderboard_reason, render_chart
from analysis.stats import StudyReport
from analysis.stats.display import DisplayNames, readable_rows
from analysis.stats.paragraphs import (
    StudyDesign,
    exclusions_line,
    methods_paragraph,
    results_paragraph,
    row_caution,
)

# Captions of the figures, in the order the report shows them (the forest plot first).
CAPTIONS = {
    "forest": (
        "Headline: each row is one question and pair of arms; the square is the first arm's share of decisive "
        "votes, the bar its {level} interval, the dashed line 50% (no preference); n is participants."
    ),
    "preferences": "Descriptive: how often each option was chosen per question, all pairs pooled.",
    "landmarks": "Exploratory: the first arm's share per landmark (unadjusted).",
    "position-bias": "Exploratory: the left image's share of decisive votes (50% = no position bias).",
    "bradley-terry": "Bradley–Terry strengths per question (they sum to 1), with {level} bootstrap intervals.",
}
EXPLORATORY = ("shares", "breakdowns", "position_bias", "agreement")


@dataclass(frozen=True)
class ReportFigure:
    """One chart as SVG bytes (and PNG bytes when asked for), with its caption."""

    name: str
    caption: str
    svg: bytes
    png: bytes | None

    @property
    def svg_uri(self) -> str:
        """The SVG as a data URI (the report embeds it: no file beside it is needed)."""
        return "data:image/svg+xml;base64," + base64.b64encode(self.svg).decode()


def report_figures(report: StudyReport, names: DisplayNames, png: bool = True) -> list[ReportFigure]:
    """Every chart of the report as SVG (and PNG unless `png` is False: a page needs only SVG), the forest first."""
    level = f"{report.config.confidence:.0%}"
    return [
        ReportFigure(
            name=name,
            caption=CAPTIONS[name].format(level=level),
            svg=render_chart(report, name, "svg", names),
            png=render_chart(report, name, "png", names) if png else None,
        )
        for name in CHARTS
    ]


def _table(rows: list[dict], names: DisplayNames, confidence: float, drop: tuple[str, ...] = ()) -> dict:
    headings, body = readable_rows(
        [{k: v for k, v in row.items() if k not in drop} for row in rows], names, confidence
    )
    return {"headings": headings, "rows": body}


def report_context(
    *, report: StudyReport, design: StudyDesign, names: DisplayNames, title: str, figures: list[ReportFigure]
) -> dict[str, Any]:
    """What the report page and the report file show, from one report."""
    confidence = report.config.confidence
    data = report.to_dict()
    leaderboard = []
    for question in dict.fromkeys(row["question"] for row in data["bradley_terry"]["rows"]):
        rows = sorted(
            (row for row in data["bradley_terry"]["rows"] if row["question"] == question),
            # Not estimable (e.g. unanimous votes): no ranks at all; keep the rows' order.
            key=lambda r: math.inf if r["rank"] is None else r["rank"],
        )
        if rows[0]["strength"] is not None:
            leaderboard.append(
                {"question": names.question(question), **_table(rows, names, confidence, drop=("question",))}
            )
    exploratory = [
        {"title": table["title"], "note": table["note"], **_table(table["rows"], names, confidence)}
        for name, table in data.items()
        if name in EXPLORATORY
    ]
    return {
        "title": title,
        "figures": figures,
        "forest": figures[0],
        # Without strengths the Bradley-Terry figure would only repeat the leaderboard's one line.
        "other_figures": [f for f in figures[1:] if f.name != "bradley-terry" or leaderboard],
        "exclusions_line": exclusions_line(report.exclusions),
        # With three or more arms the ranking is the answer; the pairwise headline follows it.
        "ranking_first": len(design.arms) >= 3,
        "methods": methods_paragraph(report, design, names),
        "results": results_paragraph(report, design, names),
        # Cautions are sentences: they go under the table, each with its row's display names.
        "headline": _table(data["headline"], names, confidence, drop=("reading", "caution", "anytime")),
        "cautions": [
            f"{names.question(row.question)}, {names.pair(row.arm_a, row.arm_b)}: {row_caution(row)}"
            for row in report.headline.rows
            if row.caution
        ],
        "anytime": {
            "title": data["anytime"]["title"],
            "note": data["anytime"]["note"],
            **_table(data["anytime"]["rows"], names, confidence),
        },
        "headline_title": report.headline.title,
        "headline_note": report.headline.note.replace("p_holm", "p (Holm)"),
        "leaderboard": leaderboard,
        "leaderboard_reason": leaderboard_reason(report, names),
        "exploratory": exploratory,
        "plan": design.plan,
        "names": names,
    }


def report_data(*, report: StudyReport, design: StudyDesign, names: DisplayNames) -> dict[str, Any]:
    """The report as JSON-able data with the Methods and Results paragraphs and the preregistration (or None)."""
    return {
        **report.to_dict(),
        "methods": methods_paragraph(report, design, names),
        "results": results_paragraph(report, design, names),
        "plan": design.plan.to_dict() if design.plan else None,
    }


def report_html(context: dict[str, Any]) -> str:
    """The report as one self-contained HTML document: inline style, figures as data URIs, no links out."""
    return render_to_string("analysis/report_document.html", context)
