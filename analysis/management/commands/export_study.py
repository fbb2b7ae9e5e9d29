"""python manage.py export_study SLUG --format csv|json|parquet --output PATH: responses plus a summary."""

from pathlib import Path

from analysis.exports import EXPORT_FORMATS
from analysis.management.commands._options import add_analysis_options, analysis_config
from analysis.services import study_export
from peftlab.commands import PeftlabCommand
from studies.selectors import study_get_by_slug


class Command(PeftlabCommand):
    help = "Export one row per response (pseudonymous) and a summary JSON with the report beside it."

    def add_arguments(self, parser) -> None:
        parser.add_argument("slug", help="The study's slug.")
        parser.add_argument("--format", choices=EXPORT_FORMATS, default="csv", dest="fmt")
        parser.add_argument("--output", type=Path, required=True, help="The responses file to write.")
        parser.add_argument(
            "--include-external-ids",
            action="store_true",
            help="Also export Prolific/MTurk ids (personal data).",
        )
        add_analysis_options(parser)

    def handle(self, *args, **options) -> None:
        files = study_export(
            study=study_get_by_slug(slug=options["slug"]),
            output=options["output"],
            fmt=options["fmt"],
            include_external_ids=options["include_external_ids"],
            config=analysis_config(options),
            include_pilot=options["include_pilot"],
        )
        self.stdout.write(
            f"wrote {files.rows} responses to {files.responses}, the summary to {files.summary} and the"
            f" participants to {files.participants}"
        )
