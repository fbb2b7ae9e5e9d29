"""`manage.py demo`: the whole pipeline on the tiny offline model and synthetic data, then (optionally) serve it."""

from pathlib import Path

from django.core.management import call_command

from console.demo import DEMO_RESEARCHER, demo_links, run_demo
from peftlab.commands import PeftlabCommand


class Command(PeftlabCommand):
    help = (
        "Train, render, open a blind study and analyse a pilot of it, all on the tiny model (SD 1.x, or SDXL with "
        "--family sdxl); --serve serves it."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--output", type=Path, default=Path("var/demo"), help="Folder for the demo's files."
        )
        parser.add_argument(
            "--serve", action="store_true", help="Serve the result with runserver at the end."
        )
        parser.add_argument(
            "--family",
            default="sd15",
            help="The tiny model's family: sd15 (default) or sdxl (the tiny SDXL-shaped model); either trains "
            "LoRA, DoRA, LoKr and TI.",
        )
        parser.add_argument(
            "--images", type=int, default=16, help="Synthetic captioned images to train on (default 16)."
        )
        parser.add_argument("--epochs", type=int, default=4, help="Epochs per method (default 4).")
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--port", type=int, default=8000)

    def handle(self, *args, **options):
        result = run_demo(
            output=options["output"],
            log=self.stdout.write,
            family=options["family"],
            images=options["images"],
            epochs=options["epochs"],
        )
        for line in result.lines:
            self.stdout.write(line)
        base_url = f"http://{options['host']}:{options['port']}"
        for line in demo_links(study=result.study, base_url=base_url):
            self.stdout.write(line)
        self.stdout.write(f"staff login {DEMO_RESEARCHER} / {result.password}")
        if options["serve"]:
            self.stdout.write(f"Serving on {base_url}/ (Ctrl-C to stop)")
            call_command("runserver", f"{options['host']}:{options['port']}", use_reloader=False)
