"""The base of peftlab's management commands and manage.py's entry: user errors and misconfigurations end in
one line on stderr and a non-zero exit, never a traceback (`--traceback` still shows one)."""

import sys
from typing import Any
from urllib.parse import urlsplit

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.core.management import execute_from_command_line as django_execute_from_command_line
from django.core.management.base import BaseCommand, CommandError
from django.db import DEFAULT_DB_ALIAS, DatabaseError, connections
from django.db.migrations.executor import MigrationExecutor
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from peftlab.errors import UserInputError


def _first_line(error: BaseException) -> str:
    """The first line of an error's message (drivers add hints on further lines)."""
    return str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__


def _database_message(error: DatabaseError) -> str | None:
    """Explain a database error as unreachable or not migrated; None when the database is fine."""
    connection = connections[DEFAULT_DB_ALIAS]
    config = connection.settings_dict
    if connection.vendor == "sqlite":
        where = f"SQLite database {config['NAME']}"
    else:
        host = f"{config['HOST'] or 'localhost'}:{config['PORT'] or 'default port'}"
        where = f"{connection.display_name} database {config['NAME']!r} at {host}"
    try:
        connection.ensure_connection()
    except DatabaseError as reach_error:
        return (
            f"cannot connect to {where} ({_first_line(reach_error)}): check that the server runs and the "
            "database exists, or fix DATABASE_URL."
        )
    try:
        executor = MigrationExecutor(connection)
        unapplied = executor.migration_plan(executor.loader.graph.leaf_nodes())
    except DatabaseError:
        return None
    if unapplied:
        return f"the {where} has {len(unapplied)} migration(s) not applied: run python manage.py migrate."
    return None


def misconfiguration_message(error: BaseException) -> str | None:
    """One line naming the variable to fix when `error` comes from the database or Redis setup, else None."""
    if isinstance(error, RedisConnectionError | RedisTimeoutError):
        if not settings.REDIS_URL:
            return f"cannot reach Redis ({_first_line(error)}): set REDIS_URL to a running Redis."
        url = urlsplit(settings.REDIS_URL)
        where = f"{url.scheme}://{url.hostname}:{url.port or 6379}{url.path}"  # without a password
        return (
            f"cannot reach Redis at REDIS_URL={where} ({_first_line(error)}): start Redis there, fix REDIS_URL, "
            "or unset it to run jobs in-process."
        )
    if isinstance(error, DatabaseError):
        return _database_message(error)
    return None


class PeftlabCommand(BaseCommand):
    """A management command whose user errors and misconfigurations end in one line and a non-zero exit."""

    def execute(self, *args: Any, **options: Any) -> str | None:
        try:
            return super().execute(*args, **options)
        except UserInputError as error:
            raise CommandError(str(error)) from None
        except Exception as error:
            message = None if options.get("traceback") else misconfiguration_message(error)
            if message is None:
                raise
            raise CommandError(message) from None


def execute_from_command_line(argv: list[str]) -> None:
    """manage.py: run a command (Django's own too) so that a misconfiguration ends in one line, exit status 1."""
    try:
        _ = (
            settings.INSTALLED_APPS
        )  # read the settings now: Django hides their error behind "Unknown command"
    except ImproperlyConfigured as error:
        sys.exit(f"ImproperlyConfigured: {error}")
    try:
        django_execute_from_command_line(argv)
    except Exception as error:
        message = None if "--traceback" in argv else misconfiguration_message(error)
        if message is None:
            raise
        sys.exit(f"CommandError: {message}")
