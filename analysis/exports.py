"""Response exports as CSV, JSON or Parquet bytes (pure pandas, no Django)."""

from __future__ import annotations

import io
from collections.abc import Sequence

import pandas as pd

from analysis.stats import RESPONSE_COLUMNS
from peftlab.errors import UserInputError
from peftlab.spreadsheets import frame_to_csv

EXPORT_FORMATS = ("csv", "json", "parquet")
NULLABLE_INTEGER_COLUMNS = ("client_ms", "viewport_width", "viewport_height")
CONTENT_TYPES = {"csv": "text/csv", "json": "application/json", "parquet": "application/vnd.apache.parquet"}


def export_frame(
    rows: list[dict], include_external_ids: bool = False, columns: Sequence[str] = RESPONSE_COLUMNS
) -> pd.DataFrame:
    """One row per response (or per participant, given their `columns`) in the export's column order;
    external (Prolific/MTurk) ids only when asked."""
    kept = [c for c in columns if include_external_ids or c != "external_id"]
    frame = pd.DataFrame(rows, columns=list(columns))[kept]
    # Whole numbers that may be missing stay whole ("390", not "390.0"): pandas' nullable integers.
    return frame.astype({c: "Int64" for c in NULLABLE_INTEGER_COLUMNS if c in frame.columns})


def export_bytes(frame: pd.DataFrame, fmt: str) -> bytes:
    """The frame written in `fmt` (csv, json as a list of records, or parquet)."""
    if fmt not in EXPORT_FORMATS:
        raise UserInputError(f"unknown export format {fmt!r}; choose one of {', '.join(EXPORT_FORMATS)}")
    if fmt == "csv":
        return frame_to_csv(frame).encode()  # formulas neutralised: researchers open it in a spreadsheet
    if fmt == "json":
        return frame.to_json(orient="records", indent=1).encode()
    buffer = io.BytesIO()
    frame.to_parquet(buffer, index=False)
    return buffer.getvalue()
