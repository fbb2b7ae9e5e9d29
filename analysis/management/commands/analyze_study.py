"""python manage.py analyze_study SLUG [--json]: a study's statistics, the headline first (or as JSON)."""

import json
from pathlib import Path

from analysis.management.commands._options import add_analysis_options, analysis_config
from analysis.selectors import study_report
from analysis.stats import analyze_responses, plan_from_report, read_responses
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
        parser.add_argument("--json", action="store_true", help="Print JSON instead of tables.")
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
            report = analyze_responses(read_responses(options["file"]), config)
        else:
            study = study_get_by_slug(slug=options["slug"])
            report = study_report(study=study, config=config, include_pilot=options["include_pilot"])
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
        if options["json"]:
            data = report.to_dict() | ({"plan": plan.to_dict()} if plan else {})
            self.stdout.write(json.dumps(data, indent=2))
        else:
            self.stdout.write(report.to_text() + (f"\n{plan.to_text()}" if plan else ""))
