"""The statistics engine against independent scipy computations and textbook values."""

import itertools
import json
import math

import numpy as np
import pandas as pd
import pytest
from scipy import optimize, stats

from analysis.stats import (
    AnalysisConfig,
    analyze_responses,
    binomial_p_values,
    bradley_terry,
    fleiss_kappa,
    holm_adjust,
    krippendorff_alpha_nominal,
    plan_sample_size,
    wilson_intervals,
)
from peftlab.errors import UserInputError
from tests.analysis.factories import REFERENCE_COUNTS, reference_frame, reference_rows, response_row


def overall(table, **match):
    """The overall-scope rows of a result table matching the given fields."""
    frame = table.to_frame()
    if "scope" in frame:
        frame = frame[frame["scope"] == "all"]
    for key, value in match.items():
        frame = frame[frame[key] == value]
    return frame


@pytest.fixture(scope="module")
def reference_report():
    return analyze_responses(reference_frame(), AnalysisConfig(bootstrap=0))


@pytest.mark.parametrize(
    ("question", "option"), [(q, o) for q, c in REFERENCE_COUNTS.items() for o in c if c[o]]
)
def test_shares_are_the_reference_percentages_with_scipy_wilson_intervals(reference_report, question, option):
    count = REFERENCE_COUNTS[question][option]
    row = overall(reference_report.shares, question=question, option=option).iloc[0]
    expected = stats.binomtest(count, 50).proportion_ci(confidence_level=0.95, method="wilson")
    assert (row["count"], row["n"]) == (count, 50)
    assert row["share"] == pytest.approx(count / 50)
    assert (row["ci_low"], row["ci_high"]) == pytest.approx((expected.low, expected.high))


def test_pair_tests_are_exact_binomial_tests_on_decisive_votes(reference_report):
    for question, counts in REFERENCE_COUNTS.items():
        row = overall(reference_report.pair_tests, question=question).iloc[0]
        assert (row["arm_a"], row["arm_b"]) == ("lora", "ti")
        assert (row["wins_a"], row["wins_b"]) == (counts["lora"], counts["ti"])
        assert (row["both"], row["neither"]) == (counts.get("both", 0), counts.get("neither", 0))
        decisive = counts["lora"] + counts["ti"]
        assert row["p_value"] == pytest.approx(stats.binomtest(counts["lora"], decisive, 0.5).pvalue)
    buy = overall(reference_report.pair_tests, question="buy").iloc[0]
    assert buy["p_value"] < 1e-12  # 45 of 45 decisive votes


def test_ties_as_half_counts_both_and_neither_as_half_votes_rounded_towards_the_null():
    report = analyze_responses(reference_frame(), AnalysisConfig(bootstrap=0, ties_as_half=True))
    landmark = overall(report.pair_tests, question="landmark").iloc[0]
    # 20 LoRA + 25 neither / 2 = 32.5 of 50: rounded to 32 so the p-value is never smaller than exact.
    assert landmark["votes"] == 50
    assert landmark["share_a"] == pytest.approx(32.5 / 50)
    assert landmark["p_value"] == pytest.approx(stats.binomtest(32, 50).pvalue)


def test_chi_square_covers_every_option_a_question_offered(reference_report):
    for question, counts in REFERENCE_COUNTS.items():
        row = overall(reference_report.chi_square, question=question).iloc[0]
        observed = [counts["lora"], counts["ti"], *(counts[o] for o in ("both", "neither") if o in counts)]
        expected = stats.chisquare(observed)
        assert row["counts"] == "/".join(map(str, observed))
        assert row["statistic"] == pytest.approx(expected.statistic)
        assert row["p_value"] == pytest.approx(expected.pvalue)
        assert row["dof"] == len(observed) - 1


def test_holm_adjustment_matches_the_step_down_definition_over_all_tests(reference_report):
    p = np.array([0.01, 0.04, 0.03, 0.005, np.nan, 0.2])
    valid = p[~np.isnan(p)]
    m = len(valid)
    ordered = np.sort(valid)
    independent = {
        value: min(1.0, max((m - j) * ordered[j] for j in range(i + 1))) for i, value in enumerate(ordered)
    }
    adjusted = holm_adjust(p)
    assert math.isnan(adjusted[4])
    for raw, adj in zip(p, adjusted, strict=True):
        if not math.isnan(raw):
            assert adj == pytest.approx(independent[raw])
    tables = [reference_report.pair_tests, reference_report.chi_square, reference_report.position_bias]
    frames = pd.concat([t.to_frame()[["p_value", "p_holm"]] for t in tables])
    assert np.allclose(frames["p_holm"], holm_adjust(frames["p_value"].to_numpy()), equal_nan=True)
    assert (frames["p_holm"].dropna() >= frames["p_value"].dropna()).all()


def test_breakdowns_per_landmark_and_prompt_sum_to_the_overall_counts(reference_report):
    shares = reference_report.shares.to_frame()
    for scope in ("landmark", "prompt"):
        per_group = shares[shares["scope"] == scope].groupby(["question", "option"])["count"].sum()
        total = shares[shares["scope"] == "all"].set_index(["question", "option"])["count"]
        assert per_group.sort_index().equals(total.sort_index())
    harbour = shares[(shares["scope"] == "landmark") & (shares["group"] == "harbour-bridge")]
    assert set(harbour["n"]) == {10}


def test_position_bias_tests_the_left_share_of_decisive_votes(reference_report):
    raw = reference_frame()
    decisive = raw[raw["choice"].isin(["left", "right"])]
    left = int((decisive["choice"] == "left").sum())
    row = overall(reference_report.position_bias, question="all").iloc[0]
    assert (row["left"], row["decisive"]) == (left, len(decisive))
    assert row["left_share"] == pytest.approx(left / len(decisive))
    assert row["p_value"] == pytest.approx(stats.binomtest(left, len(decisive)).pvalue)
    assert set(reference_report.position_bias.to_frame()["question"]) == {"all", *REFERENCE_COUNTS}


def test_participants_who_failed_attention_are_excluded_by_default_and_counted():
    rows = reference_rows()
    for index in range(3):
        participant = f"careless{index}"
        rows.append(
            response_row(
                participant=participant,
                question="style",
                left_arm="ti",
                right_arm="lora",
                option="ti",
                failed_attention=True,
            )
        )
        rows.append(
            response_row(
                participant=participant,
                question="attention",
                left_arm="ti",
                right_arm="lora",
                option="ti",
                failed_attention=True,
                is_attention_check=True,
            )
        )
    frame = pd.DataFrame(rows)
    report = analyze_responses(frame, AnalysisConfig(bootstrap=0))
    assert report.exclusions.participants_total == 53
    assert report.exclusions.participants_excluded == 3
    assert report.exclusions.participants_analysed == 50
    assert report.exclusions.attention_check_responses == 3
    assert report.exclusions.responses_excluded == 3
    assert overall(report.pair_tests, question="style").iloc[0]["wins_b"] == 10
    assert "attention" not in set(report.shares.to_frame()["question"])
    kept = analyze_responses(frame, AnalysisConfig(bootstrap=0, exclude_failed_attention=False))
    assert kept.exclusions.participants_excluded == 0
    assert overall(kept.pair_tests, question="style").iloc[0]["wins_b"] == 13


def test_bradley_terry_recovers_strengths_that_explain_the_votes_exactly():
    # Strengths 4:2:1 predict A beats B 2/3, A beats C 4/5, B beats C 2/3: counts in those ratios.
    wins = np.array([[0, 20, 40], [10, 0, 20], [10, 10, 0]], dtype=float)
    assert bradley_terry(wins) == pytest.approx(np.array([4, 2, 1]) / 7, abs=1e-7)


def test_bradley_terry_is_the_maximum_likelihood_estimate():
    wins = np.array([[0, 7, 3, 5], [4, 0, 6, 2], [2, 5, 0, 8], [1, 3, 4, 0]], dtype=float)

    def negative_log_likelihood(theta):
        theta = np.append(theta, 0.0)  # the last log-strength fixed at 0
        diff = theta[:, None] - theta[None, :]
        return -(wins * (diff - np.logaddexp(0, diff))).sum()

    theta = np.append(optimize.minimize(negative_log_likelihood, np.zeros(3), method="BFGS", tol=1e-12).x, 0)
    expected = np.exp(theta) / np.exp(theta).sum()
    assert bradley_terry(wins) == pytest.approx(expected, abs=1e-5)


def three_arm_rows(participants: int, votes_each: int, agree: bool) -> list[dict]:
    """Three arms a > b > c; with agree=False each participant always votes for one arm (a, b or c)."""
    rows = []
    pairs = list(itertools.combinations(["a", "b", "c"], 2))
    for p in range(participants):
        for v in range(votes_each):
            left, right = pairs[v % 3]
            winner = left if agree or p % 3 == 0 else (right if p % 3 == 1 else left)
            if not agree and p % 3 == 2 and "c" in (left, right):
                winner = "c"
            rows.append(
                response_row(
                    participant=f"p{p}", question="q", left_arm=left, right_arm=right, option=winner, trial=v
                )
            )
    return rows


def test_bradley_terry_bootstrap_resamples_participants_and_is_seeded():
    config = AnalysisConfig(bootstrap=200, seed=7)
    rows = three_arm_rows(participants=30, votes_each=9, agree=False)
    report = analyze_responses(pd.DataFrame(rows), config)
    again = analyze_responses(pd.DataFrame(rows), config)
    frame = report.bradley_terry.to_frame()
    assert frame.equals(again.bradley_terry.to_frame())
    assert frame["strength"].sum() == pytest.approx(1.0)
    assert ((frame["ci_low"] <= frame["strength"]) & (frame["strength"] <= frame["ci_high"])).all()
    # The same votes cast by only 3 raters: resampling raters (not votes) must widen the intervals a lot.
    few = [dict(row, participant=f"r{int(row['participant'][1:]) % 3}") for row in rows]
    few_frame = analyze_responses(pd.DataFrame(few), config).bradley_terry.to_frame()
    assert few_frame["strength"].to_numpy() == pytest.approx(frame["strength"].to_numpy())
    assert ((few_frame["ci_high"] - few_frame["ci_low"]) > 2 * (frame["ci_high"] - frame["ci_low"])).all()


def test_bradley_terry_is_only_reported_for_three_or_more_arms(reference_report):
    assert reference_report.bradley_terry.rows == []


def test_fleiss_kappa_reproduces_fleiss_1971():
    # The worked example of Fleiss (1971) as given on Wikipedia: 10 subjects, 14 raters, 5 categories.
    counts = np.array(
        [
            [0, 0, 0, 0, 14],
            [0, 2, 6, 4, 2],
            [0, 0, 3, 5, 6],
            [0, 3, 9, 2, 0],
            [2, 2, 8, 1, 1],
            [7, 7, 0, 0, 0],
            [3, 2, 6, 3, 0],
            [2, 5, 3, 2, 2],
            [6, 5, 2, 1, 0],
            [0, 2, 2, 3, 7],
        ]
    )
    assert fleiss_kappa(counts) == pytest.approx(0.210, abs=5e-4)


def test_krippendorff_alpha_reproduces_krippendorffs_example_and_a_pairwise_computation():
    # Krippendorff (2011), "Computing Krippendorff's alpha-reliability": 4 coders, 12 units, missing values.
    data = [
        [1, 2, 3, 3, 2, 1, 4, 1, 2, None, None, None],
        [1, 2, 3, 3, 2, 2, 4, 1, 2, 5, None, 3],
        [None, 3, 3, 3, 2, 3, 4, 2, 2, 5, 1, None],
        [1, 2, 3, 3, 2, 4, 4, 1, 2, 5, 1, None],
    ]
    units = [[coder[u] for coder in data if coder[u] is not None] for u in range(12)]
    categories = sorted({v for unit in units for v in unit})
    counts = np.array([[unit.count(c) for c in categories] for unit in units])
    # Independent: observed disagreement over ordered pairs within units, expected over all pairable values.
    pairable = [unit for unit in units if len(unit) >= 2]
    values = [v for unit in pairable for v in unit]
    n = len(values)
    observed = (
        sum(
            sum(a != b for i, a in enumerate(unit) for j, b in enumerate(unit) if i != j) / (len(unit) - 1)
            for unit in pairable
        )
        / n
    )
    expected = sum(a != b for i, a in enumerate(values) for j, b in enumerate(values) if i != j) / (
        n * (n - 1)
    )
    assert krippendorff_alpha_nominal(counts) == pytest.approx(1 - observed / expected)
    assert krippendorff_alpha_nominal(counts) == pytest.approx(0.743, abs=5e-4)


def test_perfect_agreement_gives_kappa_and_alpha_one():
    rows = [
        response_row(
            participant=f"p{p}", question="q", left_arm="a", right_arm="b", option="a", landmark=lm, trial=t
        )
        for p in range(5)
        for t, lm in enumerate(("x", "y"))
    ]
    rows += [
        response_row(
            participant=f"p{p}", question="q", left_arm="a", right_arm="b", option="b", landmark="z", trial=2
        )
        for p in range(5)
    ]
    row = analyze_responses(pd.DataFrame(rows), AnalysisConfig(bootstrap=0)).agreement.to_frame().iloc[0]
    assert row["items"] == 3
    assert row["fleiss_kappa"] == pytest.approx(1.0)
    assert row["krippendorff_alpha"] == pytest.approx(1.0)
    # Items are trials: the same three votes split into one trial per participant leave nothing to agree on.
    solo = analyze_responses(
        pd.DataFrame([dict(r, trial=i) for i, r in enumerate(rows)]), AnalysisConfig(bootstrap=0)
    )
    assert solo.agreement.to_frame().iloc[0]["items"] == 0


def brute_force_power(n: int, p1: float, alpha: float) -> float:
    """Power by enumeration: the two-sided p of k sums the null probabilities no larger than k's (binomtest's rule)."""
    pmf = stats.binom.pmf(np.arange(n + 1), n, 0.5)
    p_values = np.array([pmf[pmf <= pmf[k] * (1 + 1e-7)].sum() for k in range(n + 1)])
    return float(stats.binom.pmf(np.flatnonzero(p_values <= alpha), n, p1).sum())


@pytest.mark.parametrize(("preference", "target"), [(0.8, 0.8), (0.7, 0.9)])
def test_sample_size_plan_is_the_smallest_n_reaching_the_power(preference, target):
    plan = plan_sample_size(
        preference=preference, alpha=0.05, power=target, decisive_share=0.5, votes_per_participant=3
    )
    assert brute_force_power(plan.votes, preference, 0.05) == pytest.approx(plan.achieved_power)
    assert plan.achieved_power >= target
    assert all(brute_force_power(n, preference, 0.05) < target for n in range(1, plan.votes))
    assert plan.participants == math.ceil(plan.votes / 1.5)
    rejected = [k for k in range(plan.votes + 1) if stats.binomtest(k, plan.votes).pvalue <= 0.05]
    assert stats.binom.pmf(rejected, plan.votes, preference).sum() == pytest.approx(plan.achieved_power)


def test_vectorised_wilson_and_binomial_p_match_scipy_binomtest():
    ks, ns = zip(*[(k, n) for n in (1, 2, 7, 50, 333) for k in range(0, n + 1, max(1, n // 9))], strict=True)
    low, high = wilson_intervals(ks, ns, 0.9)
    p_values = binomial_p_values(ks, ns)
    for k, n, lo, hi, p in zip(ks, ns, low, high, p_values, strict=True):
        result = stats.binomtest(k, n, 0.5)
        ci = result.proportion_ci(confidence_level=0.9, method="wilson")
        assert (lo, hi) == pytest.approx((ci.low, ci.high), abs=1e-12)
        assert p == pytest.approx(result.pvalue, rel=1e-9)


def test_report_renders_as_text_frames_and_strict_json(reference_report):
    text = reference_report.to_text()
    for table in reference_report.tables().values():
        assert table.title in text
    data = json.loads(json.dumps(reference_report.to_dict(), allow_nan=False))
    assert data["exclusions"]["participants_analysed"] == 50
    assert {r["option"] for r in data["shares"]["rows"]} == {"lora", "ti", "both", "neither"}


def test_bad_input_is_a_one_line_user_error():
    with pytest.raises(UserInputError, match="lack the column"):
        analyze_responses(pd.DataFrame([{"participant": "p"}]))
    with pytest.raises(UserInputError, match="unknown choice"):
        analyze_responses(reference_frame().assign(choice="maybe"))
    with pytest.raises(UserInputError, match="confidence"):
        AnalysisConfig(confidence=95)
    with pytest.raises(UserInputError, match="preference"):
        plan_sample_size(preference=0.5)
