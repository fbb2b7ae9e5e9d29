"""Anytime-valid inference: betting confidence sequences, e-processes, e-Holm, and the report's `anytime` rows."""

import json

import numpy as np
import pandas as pd
import pytest

from analysis.stats import AnalysisConfig, analyze_responses
from analysis.stats.sequential import confidence_sequence, e_holm, e_process
from tests.analysis.factories import response_row

# Deterministic inputs (no random stream): an equidistributed sequence with mean about 0.25, like the
# paper's Beta(10, 30) example, and one with mean about 0.5.
LOW = 0.05 + 0.4 * ((np.arange(1, 201) * 0.6180339887498949) % 1)
HALF = (np.arange(1, 201) * 0.7548776662466927) % 1
# Printed by confseq 0.0.11 (the paper's reference implementation), run from its sources with
# betting_cs(x, alpha=0.05, convex_comb=True, running_intersection=True) and
# betting_mart(x, 0.5, alpha=0.05, convex_comb=True), at looks 10, 50 and 200.
CONFSEQ = {
    "low": ([0.112, 0.199, 0.226], [0.607, 0.353, 0.28200000000000003], [4.514833439328845, 28383.101980366017, 1.481126815189833e17]),
    "half": ([0.193, 0.378, 0.431], [0.735, 0.599, 0.554], [0.7563930654879774, 0.1530365046763686, 0.05607806181983461]),
}  # fmt: skip
LOOKS = [9, 49, 199]


def heterogeneous_shares(rng: np.random.Generator, paths: int, n: int, mean: float) -> np.ndarray:
    """Participants' shares: each has a preference drawn from a Beta with this mean and casts 1 to 20 votes."""
    preference = rng.beta(4 * mean, 4 * (1 - mean), size=(paths, n))
    votes = rng.integers(1, 21, size=(paths, n))
    return rng.binomial(votes, preference) / votes


@pytest.mark.parametrize(("name", "x"), [("low", LOW), ("half", HALF)])
def test_confidence_sequence_and_e_process_are_confseqs(name, x):
    low, high = confidence_sequence(x, 0.05)
    expected_low, expected_high, expected_e = CONFSEQ[name]
    np.testing.assert_allclose(low[LOOKS], expected_low, rtol=0, atol=1e-12)
    np.testing.assert_allclose(high[LOOKS], expected_high, rtol=0, atol=1e-12)
    np.testing.assert_allclose(e_process(x, 0.05)[LOOKS], expected_e, rtol=1e-10)


def test_confidence_sequence_covers_the_mean_at_every_look_on_at_least_95_percent_of_paths():
    rng = np.random.default_rng(7)
    mean = 0.65
    shares = heterogeneous_shares(rng, 300, 150, mean)
    missed = 0
    for x in shares:
        low, high = confidence_sequence(x, 0.05)
        missed += bool(((low > mean) | (high < mean)).any())
    # Simultaneous coverage: a path counts as missed if the sequence excluded the mean at any look at all.
    assert missed / len(shares) <= 0.05
    # And it is informative: after 150 participants the sequence is well inside [0, 1].
    assert high[-1] - low[-1] < 0.3


def test_e_process_is_a_supermartingale_under_the_null():
    rng = np.random.default_rng(11)
    shares = heterogeneous_shares(rng, 4000, 200, 0.5)
    paths = e_process(shares, 0.05)
    for look in (1, 10, 50, 200):
        values = paths[:, look - 1]
        standard_error = values.std() / np.sqrt(len(values))
        assert values.mean() <= 1 + 3 * standard_error, look
    # Ville: looking after every participant rejects a true null on at most alpha of the paths.
    assert (paths.max(axis=1) >= 20).mean() <= 0.05


def test_e_holm_is_closed_testing_with_averaged_e_values():
    e = np.array([100.0, 30.0, 1.0])
    # 100 clears every intersection (mean with 30 and 1 is 43.7); 30 fails {30, 1}: mean 15.5 < 20.
    assert e_holm(e, 0.05).tolist() == [True, False, False]
    # Columns are looks: each judged on its own.
    assert e_holm(np.array([[1.0, 50.0], [1.0, 50.0]]), 0.05).tolist() == [[False, True], [False, True]]
    # Removing the correction (one hypothesis) rejects at 1/alpha.
    assert e_holm(np.array([20.0]), 0.05).tolist() == [True]


def _study(decisive: int, split: int) -> pd.DataFrame:
    """Participants P00.. finishing in reverse label order: on "style" each votes lora once; on "buy" once each way."""
    rows = []
    for number in range(decisive):
        participant = f"P{number:02d}"
        answered = f"2026-11-01T12:{59 - number:02d}:00+00:00"
        rows.append(
            response_row(
                participant=participant, question="style", left_arm="lora", right_arm="ti", option="lora"
            )
            | {"answered_at": answered}
        )
        if number < split:
            for trial, option in ((2, "lora"), (3, "ti")):
                rows.append(
                    response_row(
                        participant=participant,
                        question="buy",
                        left_arm="ti",
                        right_arm="lora",
                        option=option,
                        trial=trial,
                    )
                    | {"answered_at": answered}
                )
    return pd.DataFrame(rows)  # fmt: skip


def test_decided_at_is_the_first_look_past_the_corrected_threshold_by_hand():
    # A participant who votes only lora has share 1: the bets start above the truncation (1/2 / 1/2 = 1), and
    # stay there, so each one multiplies the "lora" capital by 1.5 and the other by 0.5:
    # e_t = (1.5^t + 0.5^t) / 2. Alone at alpha 0.05 it needs e >= 20: t = 10 (e_9 = 19.2, e_10 = 28.8).
    alone = analyze_responses(_study(12, 0), AnalysisConfig(bootstrap=0)).headline.rows[0].anytime
    assert alone.decided_at == 10
    assert alone.e_value == pytest.approx((1.5**12 + 0.5**12) / 2, rel=1e-12)
    # Beside a row whose participants split evenly (share 1/2: e stays 1), e-Holm needs (e + 1) / 2 >= 20:
    # e >= 39, first at t = 11 (e_10 = 28.8, e_11 = 43.2); the even row is never decided.
    report = analyze_responses(_study(12, 12), AnalysisConfig(bootstrap=0))
    rows = {row.question: row.anytime for row in report.headline.rows}
    assert rows["style"].decided_at == 11
    assert rows["buy"].decided_at is None
    assert rows["buy"].e_value == pytest.approx(1.0)
    # The confidence sequence of the one-sided row lies above 0.5, the even one straddles it.
    assert rows["style"].cs_low > 0.5 and rows["buy"].cs_low < 0.5 < rows["buy"].cs_high
    # In the JSON each headline row carries its `anytime` object.
    data = json.loads(report.to_json())
    style = next(row for row in data["headline"] if row["question"] == "style")
    assert set(style["anytime"]) == {"participants", "cs_low", "cs_high", "e_value", "decided_at"}
    assert style["anytime"]["decided_at"] == 11
    # The text report shows the anytime table after the headline.
    text = report.to_text()
    assert text.index("Anytime-valid") < text.index("Exclusions")


def test_participants_are_taken_in_finishing_order_and_unfinished_ones_wait():
    frame = _study(12, 0)
    # The first finisher (last label, P11) preferred ti: by finishing order it comes first, not last.
    first = frame["participant"] == "P11"
    frame.loc[first, ["choice", "chosen_arm"]] = ["right", "ti"]
    by_finish = analyze_responses(frame, AnalysisConfig(bootstrap=0)).headline.rows[0].anytime
    by_label = (
        analyze_responses(
            frame.assign(
                answered_at=frame["participant"].map(lambda p: f"2026-11-01T12:{int(p[1:]):02d}:00+00:00")
            ),
            AnalysisConfig(bootstrap=0),
        )
        .headline.rows[0]
        .anytime
    )
    assert by_finish.e_value != by_label.e_value
    # A participant still answering is not a look yet.
    unfinished = frame.assign(participant_finished=~first)
    assert (
        analyze_responses(unfinished, AnalysisConfig(bootstrap=0)).headline.rows[0].anytime.participants == 11
    )


def test_analyze_study_file_prints_the_anytime_object_per_headline_row_and_its_table(tmp_path):
    from io import StringIO

    from django.core.management import call_command

    path = tmp_path / "responses.csv"
    _study(12, 12).to_csv(path, index=False)
    out = StringIO()
    call_command("analyze_study", "--file", str(path), "--json", "--bootstrap", "0", stdout=out)
    rows = {row["question"]: row["anytime"] for row in json.loads(out.getvalue())["headline"]}
    assert rows["style"]["decided_at"] == 11 and rows["buy"]["decided_at"] is None
    assert rows["style"]["cs_low"] > 0.5
    text = StringIO()
    call_command("analyze_study", "--file", str(path), "--bootstrap", "0", stdout=text)
    assert "Anytime-valid" in text.getvalue() and "decided_at" in text.getvalue()


@pytest.mark.parametrize(
    ("stopping", "message"),
    [
        ([], "must be an object"),
        ({"rule": "pocock"}, "unknown stopping rule"),
        ({"alpha": 1.5}, "alpha must be in (0, 1)"),
        ({"alpha": "0.05"}, "alpha must be a number"),
        ({"min_participants": 50, "max_participants": 20}, "min_participants <= max_participants"),
        ({"max_participants": 10.5}, "must be a whole number"),
        ({"futility": 0.6}, "futility must be a half-width"),
        ({"alpah": 0.05}, "unknown stopping key"),
    ],
)
def test_stopping_rule_from_plan_refuses_what_a_plan_may_not_say(stopping, message):
    from peftlab.errors import UserInputError
    from studies.stopping import StoppingRule

    with pytest.raises(UserInputError, match=message.replace("(", r"\(").replace(")", r"\)")):
        StoppingRule.from_plan(stopping)


def test_stopping_rule_from_plan_reads_json_numbers():
    from studies.stopping import StoppingRule

    rule = StoppingRule.from_plan({"rule": "anytime", "alpha": 0.01, "min_participants": 20.0, "max_participants": 300, "futility": 0.05})  # fmt: skip
    assert rule == StoppingRule(alpha=0.01, min_participants=20, max_participants=300, futility=0.05)
    assert StoppingRule.from_plan(rule.to_plan()) == rule
