"""`manage.py load_prompts FILE`: a user's prompt set from JSON or CSV (or `--builtin` for the landmarks)."""

from pathlib import Path

from django.core.management.base import CommandError

from generation.services import prompt_set_install_builtin, prompt_set_load
from peftlab.commands import PeftlabCommand


class Command(PeftlabCommand):
    help = "Load a prompt set from a JSON or CSV file (see docs/generation.md), or install the built-in one."

    def add_arguments(self, parser):
        parser.add_argument("file", type=Path, nargs="?", help="JSON or CSV prompt file.")
        parser.add_argument("--name", help="Name of the new set (default: the file's 'name', else its stem).")
        parser.add_argument("--builtin", action="store_true", help="Install the built-in landmark set.")

    def handle(self, *args, **options):
        if options["builtin"] == (options["file"] is not None):
            raise CommandError("give either a FILE or --builtin.")
        if options["builtin"]:
            prompt_set = prompt_set_install_builtin()
        else:
            prompt_set = prompt_set_load(path=options["file"], name=options["name"])
        landmarks = prompt_set.prompts.values_list("landmark", flat=True).distinct().count()
        self.stdout.write(
            f"Prompt set {prompt_set.name!r}: {prompt_set.prompts.count()} prompts, {landmarks} landmarks."
        )
