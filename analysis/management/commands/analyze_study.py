"""python manage.py analyze_study (SLUG | --file F) [--json] [--report DIR]: a study's statistics, headline first."""

import json
from pathlib import Path

from analysis.management.commands._options import add_analysis_options, analysis_config
from analysis.reporting import report_data
from analysis.selectors import report_subtitle, study_design, study_display_names, study_report
from analysis.services import report_folder_write
from analysis.stats import analyze_responses, plan_from_report, read_responses
from analysis.stats.display import DisplayNames
from analysis.stats.paragraphs import design_from_frame
from peftlab.commands import PeftlabCommand
from peftlab.errors import UserInputError
from studies.selectors import study_get_by_slug


class Command(PeftlabCommand):
    help = (
        "Print a study's headline tests, then the exploratory tables, agreement and Bradley-Terry strengths."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("slug", nargs="?", help="The study's slug.")
        parser.add_argument("--file", type=Path, help="Analyse a file written by export_study instead.")
        parser.add_argument(
            "--json",
            action="store_true",
            help="Print JSON instead of tables (with the Methods and Results paragraphs and the locked plan).",
        )
        parser.add_argument(
            "--report",
            type=Path,
            metavar="DIR",
            help="Also write DIR/report.html (self-contained, opens offline) and every figure as PNG and SVG.",
        )
        parser.add_argument(
            "--plan", type=float, help="Also plan: participants needed to detect this preference (e.g. 0.65)."
        )
        parser.add_argument("--alpha", type=float, default=0.05, help="Significance level for --plan.")
        parser.add_argument("--power", type=float, default=0.8, help="Power for --plan.")
        parser.add_argument(
            "--votes-per-participant",
            type=int,
            default=1,
            help="Votes each participant gives per question and pair.",
        )
        parser.add_argument(
            "--icc",
            type=float,
            help="Intra-participant correlation for --plan (default: the largest 80 %% upper confidence bound of the analysed study's headline rows).",
        )
        parser.add_argument(
            "--decisive-share",
            type=float,
            help="Share of votes that are not ties, for --plan (default: the analysed study's smallest).",
        )
        add_analysis_options(parser)

    def handle(self, *args, **options) -> None:
        config = analysis_config(options)
        if bool(options["slug"]) == bool(options["file"]):
            raise UserInputError("give a study SLUG or --file PATH (an export), not both or neither")
        if options["file"]:
            frame = read_responses(options["file"])
            report = analyze_responses(frame, config)
            names, design = DisplayNames(), design_from_frame(frame)
            title, subtitle = options["file"].name, f"Responses read from {options['file'].name}."
        else:
            study = study_get_by_slug(slug=options["slug"])
            report = study_report(study=study, config=config, include_pilot=options["include_pilot"])
            names, design = study_display_names(study=study), study_design(study=study)
            title, subtitle = study.title, report_subtitle(study=study, names=names)
        plan = None
        if options["plan"] is not None:
            plan = plan_from_report(
                report,
                preference=options["plan"],
                alpha=options["alpha"],
                power=options["power"],
                votes_per_participant=options["votes_per_participant"],
                icc=options["icc"],
                decisive_share=options["decisive_share"],
            )
        if options["report"]:
            written = report_folder_write(
                report=report,
                design=design,
                names=names,
                title=title,
                subtitle=subtitle,
                output_dir=options["report"],
            )
            # The report's path goes to stderr, so that --json output stays one JSON document.
            self.stderr.write(f"Wrote {written[0]} and {len(written) - 1} figure files.")
        if options["json"]:
            data = report_data(report=report, design=design, names=names)
            if plan:
                data["sample_size"] = plan.to_dict()
            self.stdout.write(json.dumps(data, indent=2))
        else:
            self.stdout.write(report.to_text() + (f"\n{plan.to_text()}" if plan else ""))
