"""The trainer's records: prepared datasets, training runs and their per-epoch metrics."""

from django.db import models


class Dataset(models.Model):
    """A prepared, training-ready dataset folder written by `prepare_dataset`."""

    name = models.CharField(max_length=200)
    path = models.CharField(max_length=1000, unique=True, help_text="Absolute path of the prepared folder.")
    source_path = models.CharField(max_length=1000, help_text="The folder of captioned images it came from.")
    manifest_sha256 = models.CharField(max_length=64)
    resolution = models.PositiveIntegerField()
    num_pairs = models.PositiveIntegerField()
    num_train = models.PositiveIntegerField()
    num_validation = models.PositiveIntegerField()
    num_skipped = models.PositiveIntegerField()
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-updated_at"]

    def __str__(self) -> str:
        return f"{self.name} ({self.num_pairs} pairs at {self.resolution}px)"


class TrainingRun(models.Model):
    """One training run of any method (`train --method`, `train_lora`, `train_ti`): its config, state, timings and where its outputs are."""

    class Method(models.TextChoices):
        LORA = "lora", "LoRA"
        DORA = "dora", "DoRA"
        LOHA = "loha", "LoHa"
        LOKR = "lokr", "LoKr"
        OFT = "oft", "OFT"
        TI = "ti", "Textual Inversion"

    class Status(models.TextChoices):
        QUEUED = "queued"
        RUNNING = "running"
        FINISHED = "finished"
        FAILED = "failed"

    method = models.CharField(max_length=10, choices=Method.choices)
    dataset = models.ForeignKey(
        Dataset, null=True, blank=True, on_delete=models.SET_NULL, related_name="runs"
    )
    dataset_path = models.CharField(max_length=1000, help_text="Absolute path of the prepared dataset.")
    output_path = models.CharField(max_length=1000, help_text="Absolute path of the run's output folder.")
    config = models.JSONField(help_text="The full training config, as written to run.json.")
    resume = models.BooleanField(
        default=False, help_text="Whether the run continues a checkpoint in its output."
    )
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.QUEUED)
    error = models.TextField(blank=True)
    best_epoch = models.PositiveIntegerField(null=True, blank=True)
    best_val_loss = models.FloatField(null=True, blank=True)
    stopped_early = models.BooleanField(default=False)
    seconds = models.JSONField(
        default=dict, blank=True, help_text="Seconds per phase: load, cache, train, ..."
    )
    files = models.JSONField(default=dict, blank=True, help_text="Output files by name.")
    # What the researcher should know about the run (captions cut, resolution above the dataset's, skipped images).
    warnings = models.JSONField(default=list, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.get_method_display()} run {self.pk} -> {self.output_path} ({self.status})"


class EpochMetric(models.Model):
    """The losses and speed of one finished epoch of a training run."""

    run = models.ForeignKey(TrainingRun, on_delete=models.CASCADE, related_name="epochs")
    epoch = models.PositiveIntegerField()
    train_loss = models.FloatField()
    val_loss = models.FloatField()
    seconds = models.FloatField()
    samples_per_s = models.FloatField()

    class Meta:
        ordering = ["run", "epoch"]
        constraints = [models.UniqueConstraint(fields=["run", "epoch"], name="unique_epoch_per_run")]

    def __str__(self) -> str:
        return f"run {self.run_id} epoch {self.epoch}: val {self.val_loss:.4g}"
