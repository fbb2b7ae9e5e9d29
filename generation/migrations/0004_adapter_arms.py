"""Runs record their adapters as a list of arms (name, path, method, format, token, ...), not lora/ti keys."""

from django.db import migrations, models

# (old image parameter, new image parameter) per arm kind.
LORA_PARAMETERS = {"lora": "adapter", "lora_format": "format", "lora_scale": "scale"}
TI_PARAMETERS = {"ti": "adapter"}


def adapters_of(config: dict, lora_format: str) -> list[dict]:
    """The adapter arms of an old config's lora/ti keys."""
    adapters = []
    if config.get("lora"):
        adapters.append(
            {
                "name": "lora",
                "path": config["lora"],
                "method": "lora",
                "format": lora_format,
                "token": None,
                "initializer": None,
                "scale": config.get("lora_scale", 1.0),
            }
        )
    if config.get("ti"):
        adapters.append(
            {
                "name": "ti",
                "path": config["ti"],
                "method": "ti",
                "format": "embedding",
                "token": config.get("token"),
                "initializer": config.get("ti_initializer"),
                "scale": 1.0,
            }
        )
    return adapters


def forwards(apps, schema_editor) -> None:
    run_model = apps.get_model("generation", "GenerationRun")
    for run in run_model.objects.all():
        if "adapters" in run.config:
            continue
        lora_image = run.images.filter(arm="lora").first()
        lora_format = (lora_image.parameters.get("lora_format") if lora_image else None) or "diffusers"
        old = {
            key: run.config.pop(key, None) for key in ("lora", "ti", "token", "lora_scale", "ti_initializer")
        }
        run.config["adapters"] = adapters_of(
            {key: value for key, value in old.items() if value is not None}, lora_format
        )
        run.save(update_fields=["config"])
        for image in run.images.filter(arm__in=["lora", "ti"]):
            renames = LORA_PARAMETERS if image.arm == "lora" else TI_PARAMETERS
            parameters = {renames.get(key, key): value for key, value in image.parameters.items()}
            parameters["method"] = image.arm
            if image.arm == "ti":
                parameters["format"] = "embedding"
            image.parameters = parameters
            image.save(update_fields=["parameters"])


def backwards(apps, schema_editor) -> None:
    run_model = apps.get_model("generation", "GenerationRun")
    for run in run_model.objects.all():
        adapters = {adapter["name"]: adapter for adapter in run.config.pop("adapters", [])}
        if "lora" in adapters:
            run.config |= {"lora": adapters["lora"]["path"], "lora_scale": adapters["lora"]["scale"]}
        if "ti" in adapters:
            ti = adapters["ti"]
            run.config |= {"ti": ti["path"], "token": ti["token"], "ti_initializer": ti["initializer"]}
        run.save(update_fields=["config"])
        for image in run.images.filter(arm__in=["lora", "ti"]):
            renames = {
                new: old for old, new in (LORA_PARAMETERS if image.arm == "lora" else TI_PARAMETERS).items()
            }
            parameters = {renames.get(key, key): value for key, value in image.parameters.items()}
            parameters.pop("method", None)
            if image.arm == "ti":
                parameters.pop("format", None)
            image.parameters = parameters
            image.save(update_fields=["parameters"])


class Migration(migrations.Migration):
    dependencies = [
        ("generation", "0003_house_status_queued"),
    ]

    operations = [
        migrations.AlterField(
            model_name="generationrun",
            name="arms",
            field=models.JSONField(
                default=list,
                help_text='Arm names in order, e.g. ["base", "lora", "dora", "ti"]; config["adapters"] records '
                "each adapter arm's path, method, format and token.",
            ),
        ),
        migrations.RunPython(forwards, backwards),
    ]
