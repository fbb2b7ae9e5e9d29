"""The analysis options shared by analyze_study and export_study."""

from argparse import ArgumentParser
from typing import Any

from analysis.stats import AnalysisConfig


def add_analysis_options(parser: ArgumentParser) -> None:
    """Add the AnalysisConfig flags to a command's parser."""
    parser.add_argument(
        "--keep-failed-attention",
        action="store_true",
        help="Keep participants who failed an attention check (they are excluded by default).",
    )
    parser.add_argument(
        "--ties-as-half", action="store_true", help="Count both/neither as half a vote per arm."
    )
    parser.add_argument(
        "--bootstrap", type=int, default=1000, help="Bradley-Terry bootstrap resamples (0: off)."
    )
    parser.add_argument("--seed", type=int, default=0, help="Bootstrap seed.")
    parser.add_argument(
        "--include-pilot",
        action="store_true",
        help="Include pilot participants (staff and the pilot link; left out by default).",
    )


def analysis_config(options: dict[str, Any]) -> AnalysisConfig:
    """The AnalysisConfig the flags ask for."""
    return AnalysisConfig(
        exclude_failed_attention=not options["keep_failed_attention"],
        ties_as_half=options["ties_as_half"],
        bootstrap=options["bootstrap"],
        seed=options["seed"],
    )
