"""A generation run waiting for its job is "queued", as a training run and a job are (it was "pending")."""

from django.db import migrations, models


def rename_status(old: str, new: str):
    def forwards(apps, schema_editor) -> None:
        apps.get_model("generation", "GenerationRun").objects.filter(status=old).update(status=new)

    return forwards


class Migration(migrations.Migration):
    dependencies = [
        ("generation", "0002_generationrun_effects"),
    ]

    operations = [
        migrations.AlterField(
            model_name="generationrun",
            name="status",
            field=models.CharField(
                choices=[
                    ("queued", "Queued"),
                    ("running", "Running"),
                    ("finished", "Finished"),
                    ("failed", "Failed"),
                ],
                default="queued",
                max_length=20,
            ),
        ),
        migrations.RunPython(rename_status("pending", "queued"), rename_status("queued", "pending")),
    ]
