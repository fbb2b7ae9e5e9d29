"""The forest plot draws each headline row (question x pair) from that row's own numbers, in PNG and SVG."""

import xml.etree.ElementTree as ET

import pytest

from analysis.charts import forest_rows, render_chart
from analysis.stats import analyze_responses
from analysis.stats.display import DisplayNames
from tests.analysis.factories import response_row

SVG = "{http://www.w3.org/2000/svg}"
# First arm's wins out of 20 one-vote participants, per question and pair: every cell differs.
WINS = {
    "style": {("a", "b"): 15, ("a", "c"): 4, ("b", "c"): 11},
    "artwork": {("a", "b"): 9, ("a", "c"): 17, ("b", "c"): 6},
}
NAMES = DisplayNames(
    arms={"a": "Base", "b": "LoRA (r8)", "c": "Textual Inversion"}, questions={"style": "Style match"}
)


def three_arm_frame():
    import pandas as pd

    rows = []
    for question, pairs in WINS.items():
        for (arm_a, arm_b), wins in pairs.items():
            for index in range(20):
                left, right = (arm_a, arm_b) if index % 2 else (arm_b, arm_a)
                rows.append(
                    response_row(
                        participant=f"{question}-{arm_a}{arm_b}-{index}",
                        question=question,
                        left_arm=left,
                        right_arm=right,
                        option=arm_a if index < wins else arm_b,
                    )
                )
    return pd.DataFrame(rows)


def _path_points(group) -> list[tuple[float, float]]:
    words = group.find(f"{SVG}path").get("d").replace("M", " ").replace("L", " ").replace("z", " ").split()
    return [(float(x), float(y)) for x, y in zip(words[::2], words[1::2], strict=True)]


@pytest.fixture(scope="module")
def report():
    return analyze_responses(three_arm_frame())


def test_forest_rows_are_the_headline_rows_with_display_names(report):
    rows = forest_rows(report, NAMES)
    assert [(r.question, r.arm_a, r.arm_b) for r in rows] == [
        (h.question, h.arm_a, h.arm_b) for h in report.headline.rows
    ]
    by_cell = {(r.question, r.arm_a, r.arm_b): r for r in rows}
    assert by_cell["style", "a", "c"].share_a == 4 / 20
    assert by_cell["artwork", "b", "c"].share_a == 6 / 20
    assert by_cell["style", "b", "c"].label == "Style match: LoRA (r8) vs Textual Inversion"
    assert by_cell["artwork", "a", "b"].label == "artwork: Base vs LoRA (r8)"


def test_forest_svg_draws_each_interval_of_its_own_pair_on_its_own_label(report):
    root = ET.fromstring(render_chart(report, "forest", "svg", NAMES))
    groups = {g.get("id"): g for g in root.iter(f"{SVG}g") if g.get("id")}
    corners = _path_points(groups["forest-axes"])
    left, right = min(x for x, _ in corners), max(x for x, _ in corners)
    labels = {text.text: float(text.get("y")) for text in root.iter(f"{SVG}text")}
    half = _path_points(groups["forest-half"])
    assert (half[0][0] - left) / (right - left) == pytest.approx(0.5, abs=1e-6)
    headline = {(h.question, h.arm_a, h.arm_b): h for h in report.headline.rows}
    rows = forest_rows(report, NAMES)
    assert len(rows) == 6
    for row in rows:
        expected = headline[row.question, row.arm_a, row.arm_b]
        (x_low, y), (x_high, _) = _path_points(groups[row.id])
        assert (x_low - left) / (right - left) == pytest.approx(expected.ci_low, abs=1e-5)
        assert (x_high - left) / (right - left) == pytest.approx(expected.ci_high, abs=1e-5)
        share_x = float(groups[f"{row.id}-share"].find(f"{SVG}g/{SVG}use").get("x"))
        assert (share_x - left) / (right - left) == pytest.approx(expected.share_a, abs=1e-5)
        # The label nearest the drawn row is this row's pair, and the n beside it is this row's participants.
        row_labels = [label for label in labels if label in {r.label for r in rows}]
        assert min(row_labels, key=lambda label: abs(labels[label] - y)) == row.label
        numbers = [label for label in labels if label.endswith(f"n = {expected.participants}")]
        assert any(abs(labels[label] - labels[row.label]) < 1e-6 for label in numbers)


def test_forest_png_renders_and_empty_report_says_why(report):
    assert render_chart(report, "forest", "png", NAMES)[:4] == b"\x89PNG"
    empty = analyze_responses(three_arm_frame().iloc[:0])
    assert b"no decisive votes" in render_chart(empty, "forest", "svg")
