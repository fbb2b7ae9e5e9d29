"""WSGI entry point for production servers (gunicorn); runserver builds its own handler and skips the guard."""

import os

from django.core.wsgi import get_wsgi_application

from peftlab.checks import exit_unless_configured_for_serving

exit_unless_configured_for_serving()
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "peftlab.settings")
application = get_wsgi_application()
