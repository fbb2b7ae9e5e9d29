"""Rendering results: titled tables of dataclass rows as DataFrames, aligned text and strict JSON."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Generic, TypeVar

import numpy as np
import pandas as pd

R = TypeVar("R")
MISSING = "-"


@dataclass
class ResultTable(Generic[R]):
    """A titled list of result rows (dataclasses) that renders as a DataFrame, text or JSON.

    `hidden` columns stay in the JSON but not in the text and HTML tables; `lines` are sentences printed
    under the table (the headline's plain readings).
    """

    title: str
    row_type: type
    rows: list[R]
    note: str = ""
    hidden: tuple[str, ...] = ()
    lines: list[str] = field(default_factory=list)

    def to_frame(self, shown_only: bool = False) -> pd.DataFrame:
        """The rows as a DataFrame, one column per field (without the hidden ones if `shown_only`)."""
        frame = pd.DataFrame(
            [asdict(row) for row in self.rows], columns=[f.name for f in fields(self.row_type)]
        )
        return frame.drop(columns=list(self.hidden)) if shown_only else frame

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict: title, note and the rows (NaN becomes null)."""
        return {"title": self.title, "note": self.note, "rows": self.row_dicts()}

    def row_dicts(self) -> list[dict[str, Any]]:
        """The rows as JSON-able dicts."""
        return [jsonable(asdict(row)) for row in self.rows]

    def to_text(self) -> str:
        """The table as aligned text under its title, then its lines and note."""
        frame = self.to_frame(shown_only=True)
        # A missing number (an exact test's ICC, a strength that is not estimable) prints as "-", not NaN;
        # the row's method or status column says why.
        body = (
            frame.to_string(index=False, float_format=format_float, na_rep=MISSING)
            if self.rows
            else "(no data)"
        )
        extra = "".join(f"\n{line}" for line in [*self.lines, self.note] if line)
        return f"{self.title}\n{'=' * len(self.title)}\n{body}{extra}\n"

    def to_html(self) -> str:
        """The shown columns as an HTML table."""
        return self.to_frame(shown_only=True).to_html(index=False, float_format=format_float, na_rep="")


def format_float(value: float) -> str:
    """Four significant digits, as every table shows numbers."""
    return f"{value:.4g}"


def jsonable(row: dict[str, Any]) -> dict[str, Any]:
    """The dict (and the dicts in it) with numpy scalars as Python ones and NaN/inf as None (strict JSON)."""
    out: dict[str, Any] = {}
    for key, value in row.items():
        if isinstance(value, dict):
            value = jsonable(value)
        if isinstance(value, np.generic):
            value = value.item()
        if isinstance(value, float) and not math.isfinite(value):
            value = None
        out[key] = value
    return out
