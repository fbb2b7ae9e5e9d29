from django.apps import AppConfig


class AnalysisConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "analysis"

    def ready(self) -> None:
        # Listen to studies' participant_finished: a preregistered stopping rule is applied as people finish.
        from analysis import receivers  # noqa: F401
