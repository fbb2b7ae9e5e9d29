"""python manage.py analyze_study SLUG [--json]: a study's statistics as tables (or JSON)."""

import json
from pathlib import Path

from analysis.management.commands._options import add_analysis_options, analysis_config
from analysis.selectors import study_report
from analysis.stats import analyze_responses, plan_sample_size, read_responses
from peftlab.commands import PeftlabCommand
from peftlab.errors import UserInputError
from studies.selectors import study_get_by_slug


class Command(PeftlabCommand):
    help = "Print a study's preference statistics, tests, agreement and Bradley-Terry strengths."

    def add_arguments(self, parser) -> None:
        parser.add_argument("slug", nargs="?", help="The study's slug.")
        parser.add_argument("--file", type=Path, help="Analyse a file written by export_study instead.")
        parser.add_argument("--json", action="store_true", help="Print JSON instead of tables.")
        parser.add_argument(
            "--plan", type=float, help="Also plan: votes needed to detect this preference (e.g. 0.65)."
        )
        parser.add_argument("--alpha", type=float, default=0.05, help="Significance level for --plan.")
        parser.add_argument("--power", type=float, default=0.8, help="Power for --plan.")
        add_analysis_options(parser)

    def handle(self, *args, **options) -> None:
        config = analysis_config(options)
        if bool(options["slug"]) == bool(options["file"]):
            raise UserInputError("give a study SLUG or --file PATH (an export), not both or neither")
        if options["file"]:
            report = analyze_responses(read_responses(options["file"]), config)
        else:
            report = study_report(study=study_get_by_slug(slug=options["slug"]), config=config)
        plan = None
        if options["plan"] is not None:
            plan = plan_sample_size(
                preference=options["plan"], alpha=options["alpha"], power=options["power"]
            )
        if options["json"]:
            data = report.to_dict() | ({"plan": plan.to_dict()} if plan else {})
            self.stdout.write(json.dumps(data, indent=2))
        else:
            self.stdout.write(report.to_text() + (f"\n{plan.to_text()}" if plan else ""))
