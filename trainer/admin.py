from django.contrib import admin

from trainer.models import Dataset, EpochMetric, TrainingRun


@admin.register(Dataset)
class DatasetAdmin(admin.ModelAdmin):
    list_display = (
        "name",
        "num_pairs",
        "num_train",
        "num_validation",
        "num_skipped",
        "resolution",
        "updated_at",
    )
    search_fields = ("name", "path", "source_path")
    readonly_fields = ("manifest_sha256", "created_at", "updated_at")


class EpochMetricInline(admin.TabularInline):
    model = EpochMetric
    extra = 0
    can_delete = False
    readonly_fields = ("epoch", "train_loss", "val_loss", "seconds", "samples_per_s")


@admin.register(TrainingRun)
class TrainingRunAdmin(admin.ModelAdmin):
    list_display = ("id", "method", "status", "best_epoch", "best_val_loss", "output_path", "created_at")
    list_filter = ("method", "status")
    search_fields = ("output_path", "dataset_path")
    readonly_fields = ("created_at", "started_at", "finished_at", "seconds", "files", "config", "error")
    inlines = [EpochMetricInline]


@admin.register(EpochMetric)
class EpochMetricAdmin(admin.ModelAdmin):
    list_display = ("run", "epoch", "train_loss", "val_loss", "seconds", "samples_per_s")
    list_filter = ("run__method",)
