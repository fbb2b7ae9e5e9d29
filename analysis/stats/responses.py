"""Reading responses: the columns a response frame has, checking their types, and reading export files."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from peftlab.errors import UserInputError

RESPONSE_COLUMNS = (
    "participant",
    "external_id",
    "trial",
    "trial_index",
    "question",
    "question_text",
    "landmark",
    "prompt",
    "left_arm",
    "right_arm",
    "choice",
    "chosen_arm",
    "response_ms",
    "client_ms",
    "shown_at",
    "answered_at",
    "is_attention_check",
    "attention_passed",
    "participant_failed_attention",
    "participant_finished",
    "participant_is_pilot",
    "generation_run",
    "left_image",
    "right_image",
    "left_seed",
    "right_seed",
    "left_rendered_prompt",
    "right_rendered_prompt",
)
# The columns the analysis needs; the others are carried for exports.
REQUIRED_COLUMNS = (
    "participant",
    "question",
    "landmark",
    "prompt",
    "left_arm",
    "right_arm",
    "choice",
    "is_attention_check",
    "participant_failed_attention",
)
CHOICES = ("left", "right", "both", "neither")


def prepare_responses(frame: pd.DataFrame) -> pd.DataFrame:
    """Check the columns and types of a response frame (as built, or read back from an export)."""
    missing = [column for column in REQUIRED_COLUMNS if column not in frame.columns]
    if missing:
        raise UserInputError(f"the responses lack the column(s) {missing}; export them with export_study")
    frame = frame.copy()
    # Categoricals: grouping and comparing integer codes is what keeps a million responses fast.
    for column in ("participant", "question", "landmark", "prompt", "left_arm", "right_arm", "choice"):
        if not isinstance(frame[column].dtype, pd.CategoricalDtype):
            frame[column] = frame[column].fillna("").astype(str).astype("category")
    for column in (
        "is_attention_check",
        "participant_failed_attention",
        "participant_finished",
        "participant_is_pilot",
    ):
        if column in frame.columns:
            frame[column] = _bool_column(frame[column])
    bad = sorted(set(frame["choice"].cat.categories) - set(CHOICES))
    if bad:
        raise UserInputError(f"unknown choice value(s) {bad}; expected one of {list(CHOICES)}")
    return frame


def _bool_column(column: pd.Series) -> pd.Series:
    """A boolean column from booleans or their text (as CSV files hold them); missing is False."""
    if column.dtype == bool:
        return column
    return column.astype(str).str.strip().str.lower().isin(("true", "1", "1.0", "yes"))


def read_responses(path: Path) -> pd.DataFrame:
    """Read responses exported by export_study (CSV, JSON or Parquet, by the file's suffix)."""
    path = Path(path)
    if not path.is_file():
        raise UserInputError(f"no file at {path}; give the path of a file written by export_study")
    readers = {".csv": pd.read_csv, ".json": pd.read_json, ".parquet": pd.read_parquet}
    reader = readers.get(path.suffix.lower())
    if reader is None:
        raise UserInputError(f"cannot read {path.suffix!r} files; use .csv, .json or .parquet")
    kwargs = (
        {"dtype": {"participant": str, "external_id": str}, "keep_default_na": False}
        if reader is pd.read_csv
        else {}
    )
    if reader is pd.read_json:
        kwargs = {"orient": "records", "dtype": False}
    return prepare_responses(reader(path, **kwargs))
