"""python manage.py lock_plan SLUG [--alpha A] [--output plan.json]: preregister a study's analysis plan."""

import json
from pathlib import Path

from analysis.management.commands._options import add_analysis_options, analysis_config
from analysis.services import study_plan_lock
from analysis.stats.preregistration import plan_bytes
from peftlab.commands import PeftlabCommand
from peftlab.errors import UserInputError
from peftlab.files import write_bytes_atomic
from studies.selectors import study_get_by_slug


class Command(PeftlabCommand):
    help = (
        "Lock a study's analysis plan before it opens (headline questions x pairs, test and alpha, exclusion "
        "rules, target, stopping rule) and print its SHA-256; --output writes the plan as JSON for OSF."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("slug", help="The study's slug.")
        parser.add_argument(
            "--alpha", type=float, default=0.05, help="Significance level of the headline tests."
        )
        parser.add_argument(
            "--output",
            type=Path,
            help="Write the plan's JSON here (the exact bytes hashed: sha256sum gives the printed hash). "
            "On a locked study, only exports.",
        )
        parser.add_argument(
            "--stopping",
            help='Preregister a stopping rule as JSON, e.g. \'{"rule": "anytime", "alpha": 0.05, '
            '"min_participants": 20, "max_participants": 200}\' (optional: "futility": 0.05, "adaptive": true).',
        )
        add_analysis_options(parser)

    def handle(self, *args, **options) -> None:
        study = study_get_by_slug(slug=options["slug"])
        output = options["output"]
        if output is not None and not output.parent.is_dir():
            raise UserInputError(
                f"the folder {output.parent} does not exist; create it or choose another --output"
            )
        if study.plan_locked_at is None:
            study = study_plan_lock(
                study=study,
                config=analysis_config(options),
                alpha=options["alpha"],
                stopping=_stopping(options["stopping"]),
            )
            self.stdout.write(
                f"Locked the analysis plan of {study.slug} at {study.plan_locked_at:%Y-%m-%d %H:%M} UTC."
            )
        elif output is None:
            raise UserInputError(
                f"study {study.slug!r} already has a locked plan (sha256 {study.plan_sha256}); "
                "a plan is locked once. Export it with --output plan.json."
            )
        if output is not None:
            write_bytes_atomic({output: plan_bytes(study.plan)})
            self.stdout.write(f"Wrote {output} (upload it to OSF with the hash below).")
        self.stdout.write(f"sha256 {study.plan_sha256}")


def _stopping(text: str | None) -> dict | None:
    """The --stopping JSON as a dict (checked when the plan is built), or a one-line error."""
    if text is None:
        return None
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise UserInputError(f"--stopping is not valid JSON ({error.msg}); e.g. '{{\"rule\": \"anytime\"}}'") from None
