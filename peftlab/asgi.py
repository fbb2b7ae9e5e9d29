"""ASGI entry point for production servers (uvicorn, daphne)."""

import os

from django.core.asgi import get_asgi_application

from peftlab.checks import exit_unless_configured_for_serving

exit_unless_configured_for_serving()
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "peftlab.settings")
application = get_asgi_application()
