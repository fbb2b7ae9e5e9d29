"""Display names and number formats for what a reader sees: reports, charts and the Methods/Results text."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

# How the tie options read in a table or sentence.
OPTION_NAMES = {"both": "both equally", "neither": "neither"}


@dataclass(frozen=True)
class DisplayNames:
    """Names to show for arms and questions (Study.arm_labels, Question.label); a missing one shows its key."""

    arms: Mapping[str, str] = field(default_factory=dict)
    questions: Mapping[str, str] = field(default_factory=dict)

    def arm(self, key: str) -> str:
        """The arm's display name (or a tie option's reading)."""
        return self.arms.get(key) or OPTION_NAMES.get(key) or key

    def question(self, key: str) -> str:
        """The question's display name."""
        return self.questions.get(key) or key

    def pair(self, arm_a: str, arm_b: str) -> str:
        """'A vs B' in display names."""
        return f"{self.arm(arm_a)} vs {self.arm(arm_b)}"


def percent(value: float, digits: int = 0) -> str:
    """A share as a percentage ("80%"), or an en dash when there is none."""
    return "–" if value is None or math.isnan(value) else f"{value * 100:.{digits}f}%"


def interval(low: float, high: float, digits: int = 0) -> str:
    """An interval of shares as "[64%, 90%]"."""
    if low is None or high is None or math.isnan(low) or math.isnan(high):
        return "–"
    return f"[{percent(low, digits)}, {percent(high, digits)}]"


def p_value(value: float) -> str:
    """A p-value as journals print it: "p < .001", else three decimals ("p = .012")."""
    if value is None or math.isnan(value):
        return "–"
    if value < 0.001:
        return "p < .001"
    return f"p = {value:.3f}".replace("0.", ".", 1)


def number(value: float, digits: int = 2) -> str:
    """A number with at most `digits` decimals and no trailing zeros ("12", "1.5"), or an en dash."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if float(value).is_integer():
        return f"{int(value):,}"
    return f"{value:,.{digits}f}".rstrip("0").rstrip(".")


# Column headings a reader understands; a column not named here reads as its key with spaces.
HEADINGS = {
    "question": "Question",
    "comparison": "Comparison (first vs second arm)",
    "arm": "Arm",
    "option": "Option",
    "scope": "By",
    "group": "Group",
    "participants": "Participants",
    "votes": "Votes",
    "ties": "Ties",
    "share_a": "First arm's share",
    "share": "Share",
    "left_share": "Left share",
    "strength": "Strength",
    "p_value": "p",
    "p_holm": "p (Holm)",
    "method": "Test",
    "icc": "ICC",
    "icc_upper": "ICC (80% upper bound)",
    "df": "df",
    "design_effect": "Design effect",
    "count": "Chosen",
    "n": "Answers",
    "left": "Left",
    "decisive": "Decisive",
    "rank": "Rank",
    "wins": "Wins",
    "comparisons": "Comparisons",
    "cs_low": "Confidence sequence, low",
    "cs_high": "Confidence sequence, high",
    "e_value": "e-value vs 50%",
    "decided_at": "Decided at (participants)",
    "status": "Note",
    "items": "Items",
    "ratings": "Ratings",
    "fleiss_kappa": "Fleiss' κ",
    "krippendorff_alpha": "Krippendorff's α",
}
SHARES = ("share_a", "share", "left_share")


def readable_rows(
    rows: list[dict], names: DisplayNames, confidence: float
) -> tuple[list[str], list[list[str]]]:
    """Result rows (dicts of a ResultTable) as headings and formatted cells: names, percentages, intervals, p.

    arm_a/arm_b become one comparison column, ci_low/ci_high an interval column beside the estimate; nested
    values (dicts, lists) are left to their own displays.
    """
    if not rows:
        return [], []
    keys = [key for key, value in rows[0].items() if not isinstance(value, dict | list)]
    columns: list[str] = []
    for key in keys:
        if key == "arm_b" or key in ("ci_low", "ci_high"):
            continue
        columns.append("comparison" if key == "arm_a" else key)
        if key in (*SHARES, "strength") and "ci_low" in keys:
            columns.append("interval")
    level = f"{confidence:.0%} CI"
    headings = [
        level if c == "interval" else HEADINGS.get(c, c.replace("_", " ").capitalize()) for c in columns
    ]
    body = []
    for row in rows:
        cells = []
        for column in columns:
            value = row.get(column)
            if column == "comparison":
                cells.append(names.pair(row["arm_a"], row["arm_b"]))
            elif column == "question":
                cells.append("all questions" if value == "all" else names.question(value))
            elif column in ("arm", "option"):
                cells.append(names.arm(value))
            elif column == "interval":
                strength = "strength" in row
                low, high = row.get("ci_low"), row.get("ci_high")
                if strength:
                    cells.append("–" if low is None else f"[{number(low, 3)},\u00a0{number(high, 3)}]")
                else:
                    # A no-break space keeps an interval on one line in a narrow column.
                    cells.append(interval(_nan(low), _nan(high), 1).replace(", ", ",\u00a0"))
            elif column in SHARES:
                cells.append(percent(_nan(value), 1))
            elif column in ("p_value", "p_holm"):
                cells.append(p_value(_nan(value)).removeprefix("p = ").removeprefix("p "))
            elif isinstance(value, float) or value is None:
                cells.append(number(_nan(value), 3))
            elif isinstance(value, bool):
                cells.append("yes" if value else "no")
            elif isinstance(value, int):
                cells.append(number(value))
            else:
                cells.append(str(value))
        body.append(cells)
    # A column empty in every row (a note nobody needed) only takes room.
    kept = [i for i in range(len(headings)) if any(row[i] for row in body)]
    return [headings[i] for i in kept], [[row[i] for i in kept] for row in body]


def _nan(value: float | None) -> float:
    """None (JSON's missing number) as NaN."""
    return math.nan if value is None else float(value)
