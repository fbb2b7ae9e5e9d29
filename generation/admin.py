"""Generation's admin: prompt sets with their prompts, runs with a link to their gallery, images read-only."""

from django.contrib import admin
from django.urls import reverse
from django.utils.html import format_html

from generation.models import GeneratedImage, GenerationRun, Prompt, PromptSet


class PromptInline(admin.TabularInline):
    model = Prompt
    extra = 0
    fields = ["position", "landmark", "text", "negative_prompt", "arm_templates"]


@admin.register(PromptSet)
class PromptSetAdmin(admin.ModelAdmin):
    list_display = ["name", "builtin", "created_at"]
    inlines = [PromptInline]


@admin.register(GenerationRun)
class GenerationRunAdmin(admin.ModelAdmin):
    list_display = ["__str__", "status", "prompt_set", "created_at", "gallery"]
    list_filter = ["status"]
    readonly_fields = ["timings", "effects", "versions", "error", "started_at", "finished_at"]

    @admin.display(description="gallery")
    def gallery(self, run: GenerationRun) -> str:
        return format_html('<a href="{}">open</a>', reverse("generation:run_gallery", args=[run.pk]))


@admin.register(GeneratedImage)
class GeneratedImageAdmin(admin.ModelAdmin):
    list_display = ["__str__", "arm", "seed", "width", "height", "sha256"]
    list_filter = ["arm"]

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False
