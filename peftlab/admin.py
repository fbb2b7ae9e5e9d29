"""Jobs in Django's admin (read-mostly: the runner writes them)."""

from django.contrib import admin

from peftlab.models import Job


@admin.register(Job)
class JobAdmin(admin.ModelAdmin):
    list_display = ["id", "kind", "status", "percent", "stage", "queue", "created_at", "finished_at"]
    list_filter = ["kind", "status", "queue"]
    search_fields = ["rq_job_id", "error"]
    readonly_fields = [field.name for field in Job._meta.fields]
