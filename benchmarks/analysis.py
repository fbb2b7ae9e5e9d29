"""Benchmark: the full analysis report on 1,000,000 synthetic responses (target: under 5 s).

3 arms, 3 questions, 20 prompts, 10,000 participants (100 responses each). Run:
    .venv/bin/python benchmarks/analysis.py [--responses N]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from analysis.stats import AnalysisConfig, analyze_responses  # noqa: E402


def synthetic_responses(responses: int, participants: int, seed: int = 0) -> pd.DataFrame:
    """Random pairwise votes in which arm 'lora' is preferred, with randomised sides and some ties."""
    rng = np.random.default_rng(seed)
    arms = np.array(["base", "lora", "ti"])
    pairs = np.array([[0, 1], [0, 2], [1, 2]])
    strengths = np.array([0.2, 0.5, 0.3])
    pair = pairs[rng.integers(0, 3, responses)]
    swap = rng.random(responses) < 0.5
    left, right = np.where(swap, pair[:, 1], pair[:, 0]), np.where(swap, pair[:, 0], pair[:, 1])
    left_wins = rng.random(responses) < strengths[left] / (strengths[left] + strengths[right])
    choice = np.where(left_wins, "left", "right").astype(object)
    extra = rng.random(responses)
    choice[extra < 0.1] = "both"
    choice[extra > 0.95] = "neither"
    prompt = rng.integers(0, 20, responses)
    participant = np.repeat(np.arange(participants), -(-responses // participants))[:responses]
    failed = np.isin(participant, rng.choice(participants, participants // 50, replace=False))
    return pd.DataFrame(
        {
            "participant": pd.Series(participant).map("p{:05d}".format),
            "question": np.array(["buy", "style", "landmark"])[rng.integers(0, 3, responses)],
            "landmark": pd.Series(prompt).map("landmark-{:02d}".format),
            "prompt": pd.Series(prompt).map("prompt {:02d} in ghiblivis style".format),
            "left_arm": arms[left],
            "right_arm": arms[right],
            "choice": choice,
            "is_attention_check": rng.random(responses) < 0.02,
            "participant_failed_attention": failed,
            "participant_finished": True,
        }
    )


def main() -> None:
    """Build the responses, then time the report."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--responses", type=int, default=1_000_000)
    parser.add_argument("--participants", type=int, default=10_000)
    args = parser.parse_args()
    frame = synthetic_responses(args.responses, args.participants)
    start, cpu = time.perf_counter(), time.process_time()
    report = analyze_responses(frame, AnalysisConfig())
    elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu
    print(report.headline.to_text())
    print(report.bradley_terry.to_text())
    print(
        f"{args.responses:,} responses, {args.participants:,} participants: full report in {elapsed:.2f} s "
        f"({cpu:.2f} s of CPU: on a shared machine the wall time includes waiting for a core)"
    )


if __name__ == "__main__":
    main()
