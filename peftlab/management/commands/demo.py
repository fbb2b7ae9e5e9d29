"""`manage.py demo`: the whole pipeline as it stands, on the tiny offline model and synthetic data."""

from pathlib import Path

from django.core.management import call_command

from peftlab.commands import PeftlabCommand
from peftlab.demo import run_demo


class Command(PeftlabCommand):
    help = "Build the tiny model, make and prepare a synthetic dataset, and run every stage on it."

    def add_arguments(self, parser):
        parser.add_argument(
            "--output", type=Path, default=Path("var/demo"), help="Folder for the demo's files."
        )
        parser.add_argument(
            "--serve", action="store_true", help="Serve the result with runserver at the end."
        )
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--port", type=int, default=8000)

    def handle(self, *args, **options):
        summary = run_demo(output=options["output"], log=self.stdout.write)
        for line in summary:
            self.stdout.write(line)
        if options["serve"]:
            self.stdout.write(f"Serving on http://{options['host']}:{options['port']}/ (Ctrl-C to stop)")
            call_command("runserver", f"{options['host']}:{options['port']}", use_reloader=False)
