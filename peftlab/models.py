"""peftlab's own records: the background job that trains, renders or prepares something."""

from django.contrib.contenttypes.fields import GenericForeignKey
from django.contrib.contenttypes.models import ContentType
from django.db import models


class Job(models.Model):
    """One background job; this row, not Redis, is the source of truth for its state and progress."""

    class Kind(models.TextChoices):
        TRAINING = "training"
        GENERATION = "generation"
        STUDY = "study"
        DATASET = "dataset"

    class Status(models.TextChoices):
        QUEUED = "queued"
        RUNNING = "running"
        FINISHED = "finished"
        FAILED = "failed"
        CANCELLED = "cancelled"

    TERMINAL = (Status.FINISHED, Status.FAILED, Status.CANCELLED)

    kind = models.CharField(max_length=20, choices=Kind.choices)
    func_path = models.CharField(
        max_length=200, help_text="Dotted path of the job function the runner calls."
    )
    kwargs = models.JSONField(default=dict, blank=True, help_text="Extra arguments of the job function.")
    queue = models.CharField(max_length=50, default="default")
    # The run this job works on (a TrainingRun, a GenerationRun, ...), if any.
    content_type = models.ForeignKey(ContentType, null=True, blank=True, on_delete=models.SET_NULL)
    object_id = models.PositiveBigIntegerField(null=True, blank=True)
    run = GenericForeignKey("content_type", "object_id")
    # When the job is expected to finish, from its progress over the whole run so far.
    eta_at = models.DateTimeField(null=True, blank=True)
    retry_of = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.SET_NULL, related_name="retries"
    )

    status = models.CharField(max_length=20, choices=Status.choices, default=Status.QUEUED)
    cancel_requested = models.BooleanField(default=False)
    percent = models.FloatField(default=0.0)
    stage = models.CharField(max_length=100, blank=True)
    done = models.PositiveBigIntegerField(default=0)
    total = models.PositiveBigIntegerField(null=True, blank=True)
    metrics = models.JSONField(
        default=dict, blank=True, help_text="The latest metrics reported (loss, epoch, ...)."
    )
    log = models.TextField(blank=True, help_text="The last lines the job reported.")
    error = models.TextField(blank=True)

    rq_job_id = models.CharField(max_length=100, blank=True, db_index=True)
    heartbeat_at = models.DateTimeField(
        null=True,
        blank=True,
        help_text="Last sign of life of the process running an in-process job (RQ keeps its own).",
    )
    created_at = models.DateTimeField(auto_now_add=True)
    enqueued_at = models.DateTimeField(null=True, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["content_type", "object_id"])]

    def __str__(self) -> str:
        return f"{self.kind} job {self.pk} ({self.status})"

    @property
    def is_active(self) -> bool:
        """Whether the job is still queued or running."""
        return self.status not in self.TERMINAL
