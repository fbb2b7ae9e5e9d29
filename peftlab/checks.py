"""Serving on the network is an explicit choice: SECRET_KEY and ALLOWED_HOSTS must come from the environment."""

import os
import sys
from typing import Any

from django.core.checks import Error, Tags, register

SERVING_VARIABLES = ("SECRET_KEY", "ALLOWED_HOSTS")
# gunicorn stops, instead of restarting the worker forever, when a worker exits with this status.
WORKER_BOOT_ERROR = 3


def serving_refusal() -> str | None:
    """The one line that says what to set before serving, or None when the environment gives both variables."""
    missing = [name for name in SERVING_VARIABLES if not os.environ.get(name, "").strip()]
    if not missing:
        return None
    return (
        f"peftlab will not serve without {' and '.join(missing)} from the environment: export "
        "SECRET_KEY=<a long random string, the same on every machine that shares the database> and "
        "ALLOWED_HOSTS=<the site's host names, comma-separated>."
    )


def exit_unless_configured_for_serving() -> None:
    """Stop a production server (any WSGI/ASGI server importing peftlab.wsgi or peftlab.asgi) with one line."""
    refusal = serving_refusal()
    if refusal is not None:
        print(refusal, file=sys.stderr, flush=True)
        raise SystemExit(WORKER_BOOT_ERROR)


@register(Tags.security, deploy=True)
def check_serving_environment(app_configs: Any, **kwargs: Any) -> list[Error]:
    """`check --deploy`: the same refusal as the production servers'."""
    refusal = serving_refusal()
    return [] if refusal is None else [Error(refusal, id="peftlab.E001")]
