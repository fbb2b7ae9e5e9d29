from django.contrib import admin

from trainer.models import Dataset


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
