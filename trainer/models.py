"""The trainer's records: prepared datasets (training runs join them later)."""

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
