"""Analysis's writes: exports and report files of a study, written atomically."""

import json
from dataclasses import dataclass
from pathlib import Path

from django.core.files.storage import default_storage

from analysis.exports import EXPORT_FORMATS, export_bytes, export_frame
from analysis.metrics import ImageScores, ScoreConfig, ScoredImage, score_images
from analysis.reporting import report_context, report_data, report_figures, report_html
from analysis.selectors import report_subtitle, study_design, study_display_names, study_report
from analysis.stats import AnalysisConfig, StudyReport, analyze_responses
from analysis.stats.display import DisplayNames
from analysis.stats.paragraphs import StudyDesign
from analysis.stats.preregistration import analysis_plan, plan_sha256
from generation.models import GenerationRun, Prompt
from peftlab.errors import UserInputError
from peftlab.files import write_bytes_atomic
from peftlab.progress import ProgressCallback, ignore_progress
from studies.models import Study
from studies.selectors import PARTICIPANT_ROW_KEYS, study_participant_rows, study_response_rows
from studies.services import study_plan_store
from studies.stopping import StoppingRule


@dataclass(frozen=True)
class ExportFiles:
    """What an export wrote: the responses file, the summary and the participants file beside it, and the number
    of response rows."""

    responses: Path
    summary: Path
    participants: Path
    rows: int


def summary_path(responses: Path) -> Path:
    """Where the summary of an export lives: beside it, `<name with suffix>.summary.json`.

    The suffix stays in the name so that CSV, JSON and Parquet exports of one study keep their own summaries.
    """
    return responses.with_name(f"{responses.name}.summary.json")


def participants_path(responses: Path) -> Path:
    """Where the participants file of an export lives: beside it, `<stem>.participants<suffix>`."""
    return responses.with_name(f"{responses.stem}.participants{responses.suffix}")


def study_export(
    *,
    study: Study,
    output: Path,
    fmt: str,
    include_external_ids: bool = False,
    config: AnalysisConfig | None = None,
    include_pilot: bool = False,
) -> ExportFiles:
    """Write one row per response to `output` (csv/json/parquet), the report as a summary beside it, and one row
    per participant (outcome, screen, browser, feedback) as `participants_path(output)`.

    Pilots are left out unless include_pilot.
    """
    if fmt not in EXPORT_FORMATS:
        raise UserInputError(f"unknown format {fmt!r}; choose one of {', '.join(EXPORT_FORMATS)}")
    output = Path(output)
    if not output.parent.is_dir():
        raise UserInputError(
            f"the folder {output.parent} does not exist; create it or choose another --output"
        )
    rows = study_response_rows(study=study, include_pilot=include_pilot)
    frame = export_frame(rows, include_external_ids=include_external_ids)
    report = analyze_responses(frame, config)
    summary = {
        "study": study.slug,
        "title": study.title,
        "arms": study.arms,
        "responses_file": output.name,
        "format": fmt,
        "external_ids_included": include_external_ids,
        "pilots_included": include_pilot,
        "report": report.to_dict(),
    }
    summary_file, participants_file = summary_path(output), participants_path(output)
    participants = export_frame(
        study_participant_rows(study=study, include_pilot=include_pilot),
        include_external_ids=include_external_ids,
        columns=PARTICIPANT_ROW_KEYS,
    )
    write_bytes_atomic(
        {
            output: export_bytes(frame, fmt),
            summary_file: json.dumps(summary, indent=2).encode(),
            participants_file: export_bytes(participants, fmt),
        }
    )
    return ExportFiles(responses=output, summary=summary_file, participants=participants_file, rows=len(frame))


def study_report_write(*, study: Study, output_dir: Path, config: AnalysisConfig | None = None) -> list[Path]:
    """Write a study's publishable report to a folder: report.html, text and JSON, CSV export and every figure."""
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    export = study_export(
        study=study, output=output_dir / f"{study.slug}-responses.csv", fmt="csv", config=config
    )
    report = study_report(study=study, config=config)
    names, design = study_display_names(study=study), study_design(study=study)
    written = report_folder_write(
        report=report,
        design=design,
        names=names,
        title=study.title,
        subtitle=report_subtitle(study=study, names=names),
        output_dir=output_dir,
    )
    data = report_data(report=report, design=design, names=names)
    files = {
        output_dir / "report.txt": report.to_text().encode(),
        output_dir / "report.json": json.dumps(data, indent=2).encode(),
    }
    write_bytes_atomic(files)
    return [export.responses, export.summary, export.participants, *written, *files]


def report_folder_write(
    *,
    report: StudyReport,
    design: StudyDesign,
    names: DisplayNames,
    title: str,
    subtitle: str,
    output_dir: Path,
) -> list[Path]:
    """Write report.html (self-contained: figures embedded, no links out) and every figure as PNG and SVG."""
    output_dir = Path(output_dir)
    if output_dir.exists() and not output_dir.is_dir():
        raise UserInputError(f"{output_dir} is a file; --report needs a folder (it is created if missing)")
    if not output_dir.parent.is_dir():
        raise UserInputError(
            f"the folder {output_dir.parent} does not exist; create it or choose another --report"
        )
    figures = report_figures(report, names)
    context = report_context(report=report, design=design, names=names, title=title, figures=figures)
    files = {output_dir / "report.html": report_html({**context, "subtitle": subtitle}).encode()}
    for figure in figures:
        files[output_dir / f"{figure.name}.svg"] = figure.svg
        files[output_dir / f"{figure.name}.png"] = figure.png
    output_dir.mkdir(exist_ok=True)
    write_bytes_atomic(files)
    return list(files)


def study_plan_lock(
    *, study: Study, config: AnalysisConfig | None = None, alpha: float = 0.05, stopping: dict | None = None
) -> Study:
    """Freeze the study's analysis plan before data arrive; returns the study with plan and plan_sha256 set.

    stopping: the preregistered stopping rule (checked by studies.stopping.StoppingRule.from_plan, stored with
    every field filled in), or None.
    """
    config = config or AnalysisConfig()
    if stopping is not None:
        stopping = StoppingRule.from_plan(stopping).to_plan()
    questions = [
        {"key": q.key, "text": q.text, "label": q.label, "options": list(q.options)}
        for q in study.questions.all()
    ]
    plan = analysis_plan(
        study={"slug": study.slug, "title": study.title, "generation_run": study.generation_run_id},
        arms=list(study.arms),
        questions=questions,
        attention_checks=study.trials.filter(is_attention_check=True).count(),
        target_participants=study.target_participants,
        max_participants=study.max_participants,
        config=config,
        alpha=alpha,
        stopping=stopping,
    )
    return study_plan_store(study=study, plan=plan, sha256=plan_sha256(plan))


def run_images_score(
    *,
    run: GenerationRun,
    clip_model: Path,
    bootstrap: int = 200,
    seed: int = 0,
    lpips_weights: Path | None = None,
    lpips_size: int = 256,
    progress: ProgressCallback = ignore_progress,
) -> ImageScores:
    """CLIP score, FID, KID (and LPIPS given local weights) of every arm of a run against its references."""
    images = list(
        run.images.select_related("prompt").order_by("arm", "prompt__position", "prompt_id", "seed")
    )
    prompts = {image.prompt for image in images}
    unique_landmarks = len({prompt.landmark for prompt in prompts}) == len(prompts)

    def label(prompt: Prompt) -> str:
        return prompt.landmark if unique_landmarks else f"{prompt.landmark} (prompt {prompt.pk})"

    references = {
        label(prompt): [_reference_path(ref) for ref in prompt.reference_images] for prompt in prompts
    }
    items = [
        ScoredImage(
            arm=image.arm, prompt=label(image.prompt), path=Path(image.image.path), text=image.rendered_prompt
        )
        for image in images
    ]
    config = ScoreConfig(
        clip_model=Path(clip_model),
        bootstrap=bootstrap,
        seed=seed,
        lpips_weights=None if lpips_weights is None else Path(lpips_weights),
        lpips_size=lpips_size,
    )
    return score_images(items, references, config, progress)


def _reference_path(reference: str) -> Path:
    """A prompt's reference image on disk: absolute paths as they are, others in media storage."""
    path = Path(reference) if Path(reference).is_absolute() else Path(default_storage.path(reference))
    if not path.is_file():
        raise UserInputError(
            f"reference image {reference} is missing ({path}); re-import the run's references"
        )
    return path
