"""Hand-made response rows for the analysis tests (the columns studies.selectors.study_response_rows gives)."""

from __future__ import annotations

import itertools

import pandas as pd

# The reference study's percentages as counts of its 50 participants, one vote each per question.
REFERENCE_COUNTS = {
    "buy": {"lora": 45, "ti": 0, "both": 5},
    "style": {"lora": 40, "ti": 10},
    "landmark": {"lora": 20, "ti": 5, "neither": 25},
}
LANDMARKS = ("harbour-bridge", "opera-house", "big-ben", "eiffel-tower", "taj-mahal")


def response_row(
    *,
    participant: str,
    question: str,
    left_arm: str,
    right_arm: str,
    option: str,
    landmark: str = "harbour-bridge",
    trial: int = 1,
    failed_attention: bool = False,
    is_attention_check: bool = False,
) -> dict:
    """One response row in which `option` (an arm, 'both' or 'neither') was chosen."""
    choice = {left_arm: "left", right_arm: "right"}.get(option, option)
    return {
        "participant": participant,
        "external_id": f"prolific-{participant}",
        "trial": trial,
        "trial_index": trial,
        "question": question,
        "question_text": f"Which image is better for {question}?",
        "landmark": landmark,
        "prompt": f"{landmark} in ghiblivis style",
        "left_arm": left_arm,
        "right_arm": right_arm,
        "choice": choice,
        "chosen_arm": option if choice in ("left", "right") else "",
        "response_ms": 1200 + trial,
        "shown_at": "2026-11-01T10:00:00+00:00",
        "answered_at": "2026-11-01T10:00:02+00:00",
        "is_attention_check": is_attention_check,
        "attention_passed": (not failed_attention) if is_attention_check else None,
        "participant_failed_attention": failed_attention,
        "participant_finished": True,
    }


def reference_rows() -> list[dict]:
    """50 participants answering the reference study's three questions; LoRA shown left on alternate trials."""
    rows = []
    for question, counts in REFERENCE_COUNTS.items():
        options = list(itertools.chain.from_iterable([option] * count for option, count in counts.items()))
        for index, option in enumerate(options):
            left, right = ("lora", "ti") if index % 2 == 0 else ("ti", "lora")
            rows.append(
                response_row(
                    participant=f"p{index:02d}",
                    question=question,
                    left_arm=left,
                    right_arm=right,
                    option=option,
                    landmark=LANDMARKS[index % len(LANDMARKS)],
                    trial=list(REFERENCE_COUNTS).index(question) + 1,
                )
            )
    return rows


def reference_frame() -> pd.DataFrame:
    """The reference study's responses as a DataFrame."""
    return pd.DataFrame(reference_rows())
