"""python manage.py score_images RUN --clip-model PATH [--lpips-weights DIR]: image metrics per arm and prompt."""

import json
from pathlib import Path

from analysis.metrics import CLIP_MODEL_HINT
from analysis.services import run_images_score
from generation.models import GenerationRun
from peftlab.commands import PeftlabCommand
from peftlab.errors import UserInputError
from peftlab.progress import TqdmProgress


class Command(PeftlabCommand):
    help = "Score a run's images: CLIP score with each image's prompt, FID/KID (and LPIPS) to the references."

    def add_arguments(self, parser) -> None:
        parser.add_argument("run", type=int, help="The generation run's id.")
        parser.add_argument("--clip-model", type=Path, help="Local CLIP folder (required).")
        parser.add_argument("--bootstrap", type=int, default=200, help="Bootstrap resamples of images.")
        parser.add_argument("--seed", type=int, default=0, help="Bootstrap seed.")
        parser.add_argument(
            "--lpips-weights", type=Path, help="Folder with alexnet.pth and alex.pth (enables LPIPS)."
        )
        parser.add_argument(
            "--lpips-size", type=int, default=256, help="Side images are resized to for LPIPS."
        )
        parser.add_argument("--json", action="store_true", help="Print JSON instead of tables.")

    def handle(self, *args, **options) -> None:
        if options["clip_model"] is None:
            raise UserInputError(f"no CLIP model given: {CLIP_MODEL_HINT}")
        run = GenerationRun.objects.filter(pk=options["run"]).first()
        if run is None:
            raise UserInputError(f"no generation run {options['run']}; list them in the console or the admin")
        progress = TqdmProgress(stream=self.stderr, disable=options["json"])
        scores = run_images_score(
            run=run,
            clip_model=options["clip_model"],
            bootstrap=options["bootstrap"],
            seed=options["seed"],
            lpips_weights=options["lpips_weights"],
            lpips_size=options["lpips_size"],
            progress=progress,
        )
        progress.close()
        self.stdout.write(json.dumps(scores.to_dict(), indent=2) if options["json"] else scores.to_text())
