"""analyze_study and export_study on a real answered study; re-analysis from the export gives the same report."""

import io
import json

import pandas as pd
import pytest
from django.core.management import CommandError, call_command

from analysis.selectors import study_report
from analysis.services import study_report_write
from analysis.stats import AnalysisConfig, analyze_responses, read_responses

pytestmark = pytest.mark.django_db


def run(*args) -> str:
    out = io.StringIO()
    call_command(*args, stdout=out)
    return out.getvalue()


def test_analyze_study_opens_with_the_headline_then_exclusions(answered_study):
    text = run("analyze_study", "seed", "--bootstrap", "0")
    assert text.startswith("Headline")
    # 8 of 10 people prefer LoRA every time: 40 of 50 votes, but the participants decide: not significant.
    assert text.index("lora not clearly preferred over ti for style: 80%") < text.index(
        "participants_excluded"
    )
    data = json.loads(
        run(
            "analyze_study",
            "seed",
            "--json",
            "--bootstrap",
            "0",
            "--plan",
            "0.7",
            "--votes-per-participant",
            "5",
        )
    )
    assert data["exclusions"]["participants_total"] == 12
    assert data["exclusions"]["participants_excluded"] == 2
    assert data["exclusions"]["attention_check_responses"] == 24
    style = [r for r in data["headline"] if r["question"] == "style"][0]
    # 10 analysed participants x 5 landmarks; participants 1 and 6 prefer TI: 40 of 50 votes, 8 of 10 people.
    assert (style["votes"], style["participants"], style["share_a"]) == (50, 10, 0.8)
    assert style["method"].startswith("t test over participants")
    # The pilot's own correlation plans the next study, in participants.
    assert data["sample_size"]["icc"] == max(r["icc"] for r in data["headline"] if r["icc"] is not None)
    assert data["sample_size"]["participants"] > 0


@pytest.mark.parametrize("fmt", ["csv", "json", "parquet"])
def test_export_then_reanalyse_gives_the_reports_numbers(answered_study, tmp_path, fmt):
    output = tmp_path / f"responses.{fmt}"
    config = AnalysisConfig(bootstrap=50)
    message = run("export_study", "seed", "--format", fmt, "--output", str(output), "--bootstrap", "50")
    assert "wrote 204 responses" in message  # 12 participants x (5 trials x 3 questions + 2 checks)
    from_db = study_report(study=answered_study, config=config).to_dict()
    from_file = analyze_responses(read_responses(output), config).to_dict()
    assert from_file == from_db
    summary = json.loads((tmp_path / f"responses.{fmt}.summary.json").read_text())
    assert summary["report"] == from_db
    assert not summary["external_ids_included"]
    from_file_json = json.loads(run("analyze_study", "--file", str(output), "--json", "--bootstrap", "50"))
    # The export carries the design too: the Methods and Results read from the file are the study's own.
    assert from_file_json == json.loads(run("analyze_study", "seed", "--json", "--bootstrap", "50"))
    assert from_file_json["plan"] is None
    tables = {k: v for k, v in from_file_json.items() if k not in ("methods", "results", "plan")}
    assert tables == json.loads(json.dumps(from_db))


def test_exports_in_every_format_keep_their_own_summary_and_name_the_images(answered_study, tmp_path):
    for fmt in ("csv", "json"):
        run("export_study", "seed", "--format", fmt, "--output", str(tmp_path / f"r.{fmt}"))
    assert json.loads((tmp_path / "r.csv.summary.json").read_text())["format"] == "csv"
    assert json.loads((tmp_path / "r.json.summary.json").read_text())["format"] == "json"
    frame = pd.read_csv(tmp_path / "r.csv")
    from generation.models import GeneratedImage

    answers = frame[~frame["is_attention_check"]]
    row = answers.iloc[0]
    left = GeneratedImage.objects.get(pk=row["left_image"])
    assert (left.arm, left.seed, left.run_id) == (row["left_arm"], row["left_seed"], row["generation_run"])
    assert row["left_rendered_prompt"] == left.rendered_prompt
    assert GeneratedImage.objects.get(pk=row["right_image"]).arm == row["right_arm"]


def test_create_study_refuses_a_pair_of_identical_arms(seed_run):
    with pytest.raises(CommandError, match="distinct arms"):
        run("create_study", "--from-generation", str(seed_run.pk), "--arms", "lora,lora")


def test_exports_leave_out_external_ids_unless_asked(answered_study, tmp_path):
    run("export_study", "seed", "--output", str(tmp_path / "plain.csv"))
    plain = pd.read_csv(tmp_path / "plain.csv")
    assert "external_id" not in plain.columns
    assert not plain.astype(str).apply(lambda c: c.str.contains("PROLIFIC")).any().any()
    assert set(plain["participant"].str[:1]) == {"P"}
    run("export_study", "seed", "--output", str(tmp_path / "ids.csv"), "--include-external-ids")
    assert pd.read_csv(tmp_path / "ids.csv")["external_id"].str.startswith("PROLIFIC").all()


def test_bad_arguments_are_one_line_errors_and_write_nothing(answered_study, tmp_path):
    with pytest.raises(CommandError, match="no study with slug"):
        run("analyze_study", "nope")
    with pytest.raises(CommandError, match="does not exist"):
        run("export_study", "seed", "--output", str(tmp_path / "missing" / "r.csv"))
    with pytest.raises(CommandError, match="no file at"):
        run("analyze_study", "--file", str(tmp_path / "none.csv"))
    assert list(tmp_path.glob("*.csv")) == []


def test_report_files_for_the_demo(answered_study, tmp_path):
    files = study_report_write(
        study=answered_study, output_dir=tmp_path / "report", config=AnalysisConfig(bootstrap=20)
    )
    names = {path.name for path in files}
    assert {"report.txt", "report.json", "seed-responses.csv", "seed-responses.csv.summary.json"} <= names
    assert {"preferences.png", "preferences.svg", "bradley-terry.svg", "landmarks.png"} <= names
    assert all(path.stat().st_size > 0 for path in files)
    assert (tmp_path / "report" / "preferences.png").read_bytes()[:4] == b"\x89PNG"
