"""Generation's records: prompt sets, generation runs and the images they rendered."""

import secrets

from django.db import models


class PromptSet(models.Model):
    """A named list of prompts rendered together (the built-in landmark set, or a user's own)."""

    name = models.SlugField(max_length=100, unique=True)
    description = models.TextField(blank=True)
    builtin = models.BooleanField(default=False)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class Prompt(models.Model):
    """One prompt of a set; `landmark` groups prompts for per-landmark analysis."""

    prompt_set = models.ForeignKey(PromptSet, on_delete=models.CASCADE, related_name="prompts")
    position = models.PositiveIntegerField(default=0)
    landmark = models.CharField(max_length=200, help_text="Group label, e.g. the landmark's name.")
    text = models.TextField()
    negative_prompt = models.TextField(blank=True)
    arm_templates = models.JSONField(
        default=dict, blank=True, help_text='Per-arm templates, e.g. {"ti": "An image of {token}, {prompt}"}.'
    )
    reference_images = models.JSONField(
        default=list, blank=True, help_text="Paths of reference images of this landmark (shown in studies)."
    )

    class Meta:
        ordering = ["prompt_set", "position", "id"]
        constraints = [
            models.UniqueConstraint(fields=["prompt_set", "landmark", "text"], name="unique_prompt_in_set")
        ]

    def __str__(self) -> str:
        return f"{self.landmark}: {self.text[:60]}"


class GenerationRun(models.Model):
    """One comparison rendering: every prompt x seed for each arm (base and up to six adapters of any method)."""

    class Status(models.TextChoices):
        QUEUED = "queued"  # the same word as a training run's and a job's
        RUNNING = "running"
        FINISHED = "finished"
        FAILED = "failed"

    class Source(models.TextChoices):
        RENDERED = "rendered", "rendered by peftlab"
        IMPORTED = "imported", "imported from files"

    name = models.CharField(max_length=200, blank=True)
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.QUEUED)
    source = models.CharField(max_length=20, choices=Source.choices, default=Source.RENDERED)
    prompt_set = models.ForeignKey(PromptSet, on_delete=models.PROTECT, related_name="runs")
    arms = models.JSONField(
        default=list,
        help_text='Arm names in order, e.g. ["base", "lora", "dora", "ti"]; config["adapters"] records '
        "each adapter arm's path, method, format and token.",
    )
    config = models.JSONField(
        default=dict, help_text="Every parameter of the run (model, adapters, seeds, ...)."
    )
    timings = models.JSONField(default=dict, blank=True)
    effects = models.JSONField(
        default=dict,
        blank=True,
        help_text="Adapter arm -> mean |pixel difference| of its probe (effect check).",
    )
    versions = models.JSONField(default=dict, blank=True, help_text="Package versions used.")
    error = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return self.name or f"generation run {self.pk}"

    @property
    def adapters(self) -> list[dict]:
        """Each adapter arm's record, in the run's arm order: name, path, method, format, token, scale."""
        by_name = {adapter["name"]: adapter for adapter in self.config.get("adapters", [])}
        return [by_name[arm] for arm in self.arms if arm in by_name]


def opaque_image_name(instance: "GeneratedImage", filename: str) -> str:
    """A random file name that says nothing of the arm, prompt or method (studies stay blind)."""
    return f"generated/{secrets.token_hex(16)}.png"


class GeneratedImage(models.Model):
    """One image of a run: an arm's rendering of a prompt with a seed."""

    run = models.ForeignKey(GenerationRun, on_delete=models.CASCADE, related_name="images")
    arm = models.CharField(max_length=50)
    prompt = models.ForeignKey(Prompt, on_delete=models.PROTECT, related_name="images")
    seed = models.BigIntegerField()
    rendered_prompt = models.TextField(
        help_text="The exact text the arm rendered (with its template applied)."
    )
    image = models.ImageField(upload_to=opaque_image_name, width_field="width", height_field="height")
    width = models.PositiveIntegerField(default=0)
    height = models.PositiveIntegerField(default=0)
    sha256 = models.CharField(max_length=64)
    parameters = models.JSONField(default=dict, help_text="Steps, guidance, scheduler, size, adapter, ...")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["run", "prompt", "seed", "arm"]
        constraints = [
            models.UniqueConstraint(
                fields=["run", "arm", "prompt", "seed"], name="unique_image_per_arm_prompt_seed"
            )
        ]

    def __str__(self) -> str:
        return f"{self.run} / {self.arm} / {self.prompt_id} / seed {self.seed}"
