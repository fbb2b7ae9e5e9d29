from django.apps import AppConfig


class PeftlabConfig(AppConfig):
    """The project itself as an app, for its cross-app commands (the demo)."""

    name = "peftlab"

    def ready(self) -> None:
        from peftlab import checks  # noqa: F401  registers the `check --deploy` refusal
