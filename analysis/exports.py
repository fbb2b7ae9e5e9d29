"""Response exports as CSV, JSON or Parquet bytes (pure pandas, no Django)."""

from __future__ import annotations

import io

import pandas as pd

from analysis.stats import RESPONSE_COLUMNS
from peftlab.errors import UserInputError
from peftlab.spreadsheets import frame_to_csv

EXPORT_FORMATS = ("csv", "json", "parquet")
CONTENT_TYPES = {"csv": "text/csv", "json": "application/json", "parquet": "application/vnd.apache.parquet"}


def export_frame(rows: list[dict], include_external_ids: bool = False) -> pd.DataFrame:
    """One row per response in the export's column order; external (Prolific/MTurk) ids only when asked."""
    columns = [c for c in RESPONSE_COLUMNS if include_external_ids or c != "external_id"]
    return pd.DataFrame(rows, columns=list(RESPONSE_COLUMNS))[columns]


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
