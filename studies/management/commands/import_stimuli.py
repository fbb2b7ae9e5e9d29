"""python manage.py import_stimuli ../shared/data/seed-study/manifest.json"""

from pathlib import Path

from peftlab.commands import PeftlabCommand
from studies.services import stimuli_import


class Command(PeftlabCommand):
    help = (
        "Import images rendered elsewhere (manifest.json: methods, landmarks with prompt/images/references)."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("manifest", type=Path)
        parser.add_argument(
            "--name", help="Name of the generation run and prompt set (default: the folder's)."
        )

    def handle(self, *args, **options) -> None:
        run = stimuli_import(manifest=options["manifest"], name=options["name"])
        images = run.images.count()
        self.stdout.write(
            f"Imported generation run {run.pk} ({run.name}): {images} images, arms {', '.join(run.arms)},"
            f" {run.prompt_set.prompts.count()} prompts (prompt set {run.prompt_set.name})."
        )
        self.stdout.write(
            f"Next: python manage.py create_study --from-generation {run.pk} --arms {','.join(run.arms)}"
        )
