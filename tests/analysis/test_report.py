"""The report that goes into a paper: the self-contained report.html, Methods/Results, leaderboard and exclusions."""

import json
import re
from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from analysis.charts import leaderboard_reason
from analysis.reporting import report_context, report_figures
from analysis.stats import analyze_responses
from analysis.stats.display import DisplayNames, p_value, readable_rows
from analysis.stats.paragraphs import PlanStatus, design_from_frame, exclusions_line, methods_paragraph
from tests.analysis.test_forest import NAMES, three_arm_frame


def run(*args: str) -> str:
    out = StringIO()
    call_command(*args, stdout=out, stderr=StringIO())
    return out.getvalue()


def assert_self_contained(html: str) -> None:
    """Nothing in the page is fetched from elsewhere: every image is a data URI, no links, no scripts."""
    assert "<script" not in html and "<link" not in html and "href=" not in html
    assert "url(" not in html and "@import" not in html
    sources = re.findall(r'src="([^"]*)"', html)
    assert sources and all(source.startswith("data:image/svg+xml;base64,") for source in sources)


@pytest.mark.django_db
def test_report_dir_from_a_study_is_self_contained_with_every_figure(answered_study, tmp_path):
    data = json.loads(
        run("analyze_study", "seed", "--json", "--bootstrap", "0", "--report", str(tmp_path / "out"))
    )
    html = (tmp_path / "out" / "report.html").read_text()
    assert_self_contained(html)
    for name in ("forest", "preferences", "landmarks", "position-bias", "bradley-terry"):
        assert (tmp_path / "out" / f"{name}.png").read_bytes()[:4] == b"\x89PNG"
        assert (tmp_path / "out" / f"{name}.svg").read_bytes().startswith(b"<?xml")
    assert html.index('id="forest-plot"') < html.index('id="results"') < html.index('id="methods"')
    # The paragraphs on the page are the ones --json prints (one source of numbers).
    assert data["methods"].replace("'", "&#x27;") in html and data["results"].replace("'", "&#x27;") in html
    assert data["plan"] is None
    assert "12 took part, 2 excluded (2 failed an attention check), 10 analysed." in data["results"]
    assert (
        "t test of participants' own shares" in data["methods"]
        and "Holm" in data["methods"]
        and "not preregistered" in data["methods"]
    )
    assert "statsmodels " in data["methods"] and "Python 3." in data["methods"]


@pytest.mark.django_db
def test_report_dir_from_a_file_with_three_arms_has_a_leaderboard(tmp_path):
    three_arm_frame().to_csv(tmp_path / "three.csv", index=False)
    run(
        "analyze_study",
        "--file",
        str(tmp_path / "three.csv"),
        "--bootstrap",
        "200",
        "--report",
        str(tmp_path / "r"),
    )
    html = (tmp_path / "r" / "report.html").read_text()
    assert_self_contained(html)
    assert html.count('class="readable leaderboard"') == 2 and 'id="leaderboard-reason"' not in html
    assert "Bradley–Terry strengths on style" in html
    # Three arms: the ranking comes first, above the pairwise forest plot, results and headline table ...
    assert html.index('id="leaderboard"') < html.index('id="forest-plot"') < html.index('id="headline-table"')
    # ... and the Results paragraph ranks the arms before it reports the pairs.
    results = html[html.index('id="results"') :]
    assert results.index("Bradley–Terry strengths on") < results.index("decisive votes")


@pytest.mark.django_db
def test_report_dir_refuses_a_file_in_one_line_and_writes_nothing(answered_study, tmp_path):
    (tmp_path / "taken").write_text("x")
    with pytest.raises(CommandError, match="is a file; --report needs a folder"):
        run("analyze_study", "seed", "--bootstrap", "0", "--report", str(tmp_path / "taken"))
    with pytest.raises(CommandError, match="does not exist"):
        run("analyze_study", "seed", "--bootstrap", "0", "--report", str(tmp_path / "no" / "dir"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["taken"]


def test_three_arms_not_estimable_says_why_not_that_arms_are_missing():
    frame = three_arm_frame()
    # Arm a wins every vote it is in: its strength runs off to infinity, so Bradley-Terry cannot be estimated.
    frame.loc[frame["left_arm"].eq("a") | frame["right_arm"].eq("a"), "choice"] = (
        frame["left_arm"].eq("a").map({True: "left", False: "right"})
    )
    report = analyze_responses(frame)
    reason = leaderboard_reason(report, NAMES)
    assert "three or more arms" not in reason and "not estimable" in reason
    # The page shows the reason and no leaderboard (not estimable rows carry no rank to sort by).
    context = report_context(
        report=report,
        design=design_from_frame(frame),
        names=NAMES,
        title="t",
        figures=report_figures(report, NAMES, png=False),
    )
    assert context["leaderboard"] == [] and context["leaderboard_reason"] == reason


def test_two_arms_leaderboard_reason_names_the_arms():
    report = analyze_responses(three_arm_frame().query("left_arm != 'c' and right_arm != 'c'"))
    assert leaderboard_reason(report, NAMES).startswith(
        "No Bradley-Terry leaderboard: it ranks three or more arms, and this study compares 2 (Base, LoRA (r8))"
    )


def test_two_arms_keep_the_pairwise_headline_first():
    frame = three_arm_frame().query("left_arm != 'c' and right_arm != 'c'")
    report = analyze_responses(frame)
    context = report_context(
        report=report,
        design=design_from_frame(frame),
        names=NAMES,
        title="t",
        figures=report_figures(report, NAMES, png=False),
    )
    from django.template.loader import render_to_string

    html = render_to_string("analysis/_report_body.html", context)
    assert context["ranking_first"] is False
    assert html.index('id="forest-plot"') < html.index('id="headline-table"') < html.index('id="leaderboard"')


def test_exclusions_line_counts_who_took_part_was_excluded_and_why_and_who_was_analysed():
    frame = three_arm_frame()
    failed = frame["participant"].isin(["style-ab-0", "style-ab-1", "artwork-bc-3"])
    frame.loc[failed, "participant_failed_attention"] = True
    report = analyze_responses(frame)
    assert (
        exclusions_line(report.exclusions)
        == "120 took part, 3 excluded (3 failed an attention check), 117 analysed."
    )


def test_methods_names_each_test_and_the_preregistration_with_its_deviations():
    frame = three_arm_frame()
    report = analyze_responses(
        frame,
    )
    design = design_from_frame(frame)
    text = methods_paragraph(report, design, NAMES)
    assert "3 arms (Base, LoRA (r8) and Textual Inversion)" in text
    assert "exact two-sided binomial test against 50%, because each participant gave one vote" in text
    assert "The 6 headline tests form one confirmatory family, corrected by Holm's step-down method" in text
    assert "Bradley–Terry model" in text and "not preregistered" in text
    locked = PlanStatus(sha256="ab" * 32, locked_at="2026-12-01T10:00:00+00:00")
    text = methods_paragraph(report, design.__class__(**{**design.__dict__, "plan": locked}), NAMES)
    assert f"preregistered (sha256 {'ab' * 32}, locked 2026-12-01T10:00:00+00:00), no deviations." in text
    deviated = PlanStatus(
        sha256="cd" * 32,
        locked_at="2026-12-01T10:00:00+00:00",
        deviations=[{"at": "2026-12-02T09:00:00+00:00", "change": "arms changed", "reason": "TI run failed"}],
    )
    text = methods_paragraph(report, design.__class__(**{**design.__dict__, "plan": deviated}), NAMES)
    assert "with 1 deviation: arms changed (2026-12-02T09:00:00+00:00): TI run failed." in text


def test_readable_rows_name_and_format_every_column():
    report = analyze_responses(three_arm_frame())
    headings, rows = readable_rows(report.headline.row_dicts(), NAMES, 0.95)
    assert headings[:3] == ["Question", "Comparison (first vs second arm)", "Participants"]
    assert "95% CI" in headings and "p (Holm)" in headings and "share_a" not in headings
    first = dict(zip(headings, rows[0], strict=True))
    assert first["Comparison (first vs second arm)"] == "Base vs LoRA (r8)"
    assert first["First arm's share"] == "45.0%"
    assert p_value(0.0004) == "p < .001" and p_value(0.0123) == "p = .012"
    assert DisplayNames().arm("both") == "both equally"


def test_plan_without_an_icc_names_the_real_cause():
    import pandas as pd

    from analysis.stats import plan_from_report
    from peftlab.errors import UserInputError
    from tests.analysis.factories import reference_frame, response_row

    one_way = pd.DataFrame(
        [
            response_row(
                participant=f"p{p}", question="style", left_arm=left, right_arm=right, option="lora", trial=t
            )
            for p in range(8)
            for t, (left, right) in enumerate([("lora", "ti"), ("ti", "lora")] * 3)
        ]
    )
    with pytest.raises(UserInputError, match="every participant's votes went the same way") as error:
        plan_from_report(analyze_responses(one_way), preference=0.65, votes_per_participant=10, icc=None)
    assert "one vote" not in str(error.value)
    with pytest.raises(UserInputError, match="each participant gave one vote per comparison; give --icc"):
        plan_from_report(
            analyze_responses(reference_frame()), preference=0.65, votes_per_participant=10, icc=None
        )


def test_a_zero_bar_is_labelled_so_it_is_seen():
    import xml.etree.ElementTree as ET

    from analysis.charts import render_chart
    from tests.analysis.factories import reference_frame

    # TI was chosen by nobody on 'buy': its bar has no height, and its label says 0%.
    report = analyze_responses(reference_frame())
    assert [s.share for s in report.shares.rows if s.question == "buy" and s.option == "ti"] == [0.0]
    root = ET.fromstring(render_chart(report, "preferences", "svg"))
    labels = [text.text for text in root.iter("{http://www.w3.org/2000/svg}text")]
    assert labels.count("0%") >= 2  # the y axis' 0% and the empty bar's own label
