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
