from django.apps import AppConfig


class ConsoleConfig(AppConfig):
    """The roof: the researcher console and the demo, which may use every app."""

    name = "console"
    verbose_name = "Console"
