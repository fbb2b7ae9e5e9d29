"""The base class of peftlab's management commands: user errors become one-line CommandErrors."""

from typing import Any

from django.core.management.base import BaseCommand, CommandError

from peftlab.errors import UserInputError


class PeftlabCommand(BaseCommand):
    """A management command whose `UserInputError`s end in one line on stderr and a non-zero exit."""

    def execute(self, *args: Any, **options: Any) -> str | None:
        try:
            return super().execute(*args, **options)
        except UserInputError as error:
            raise CommandError(str(error)) from None
