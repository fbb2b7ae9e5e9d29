"""python manage.py study_status SLUG open|closed|draft: open a draft (after its stimuli are checked) or close it."""

from peftlab.commands import PeftlabCommand
from studies.models import Study
from studies.selectors import study_get_by_slug
from studies.services import study_status_set


class Command(PeftlabCommand):
    help = "Open, close or return a study to draft; a study opens only when every image it serves can be read."

    def add_arguments(self, parser) -> None:
        parser.add_argument("slug", help="The study's slug.")
        parser.add_argument("status", choices=Study.Status.values)

    def handle(self, *args, **options) -> None:
        study = study_status_set(study=study_get_by_slug(slug=options["slug"]), status=options["status"])
        self.stdout.write(f"Study {study.slug!r} is {study.status}.")
