"""Studies in the admin: edit a study's texts and questions; a new study gets its trials built on save.

Questions added inline are validated by `Question.clean` (the same rule `create_study` applies).
"""

from django import forms
from django.contrib import admin, messages
from django.db import models
from django.urls import reverse
from django.utils.html import format_html

from peftlab.errors import UserInputError
from studies import services
from studies.models import Participant, Question, Response, Study, Trial


class QuestionInline(admin.TabularInline):
    model = Question
    extra = 0

    # A preregistered study's questions are frozen (labels stay editable in the console); changes go through
    # the services, which refuse them or record them as deviations.
    def has_add_permission(self, request, obj=None) -> bool:
        return not (obj and obj.plan_locked_at) and super().has_add_permission(request, obj)

    def has_change_permission(self, request, obj=None) -> bool:
        return not (obj and obj.plan_locked_at) and super().has_change_permission(request, obj)

    def has_delete_permission(self, request, obj=None) -> bool:
        return not (obj and obj.plan_locked_at) and super().has_delete_permission(request, obj)


class TrialInline(admin.TabularInline):
    model = Trial
    extra = 0
    fields = ["position", "prompt", "arm_a", "arm_b", "is_attention_check", "expected_choice"]
    readonly_fields = fields
    can_delete = False
    show_change_link = True

    def has_add_permission(self, request, obj=None) -> bool:
        return False


class StudyAdminForm(forms.ModelForm):
    """Check the arms against the generation run before a new study's trials are built."""

    completion_redirect_url = forms.URLField(
        assume_scheme="https",
        required=False,
        max_length=500,
        help_text=Study.completion_redirect_url.field.help_text,
    )

    class Meta:
        model = Study
        fields = [
            "title", "slug", "status", "consent_text", "instructions", "target_participants",
            "completion_code", "completion_redirect_url", "max_participants", "completion_codes",
            "generation_run", "arms",
        ]  # fmt: skip
        help_texts = {
            # Django shows help texts as HTML: the angle brackets are written as entities to be seen.
            "slug": "The entry URL is /studies/&lt;slug&gt;/.",
            "completion_codes": 'Per outcome (finished, failed_attention, declined, full), e.g. {"full": {"code": '
            '"FULL01"}, "failed_attention": {"code": "NOPAY1"}}; a code without "redirect_url" goes to the '
            "completion redirect URL above with cc=CODE.",
        }

    def clean_completion_codes(self) -> dict:
        try:
            return services.completion_codes_validate(codes=self.cleaned_data["completion_codes"] or {})
        except UserInputError as error:
            raise forms.ValidationError(str(error)) from None

    def clean(self) -> dict:
        cleaned = super().clean()
        if not self.instance.pk and cleaned.get("generation_run") and "arms" in cleaned:
            try:
                services.arms_validate(run=cleaned["generation_run"], arms=cleaned["arms"])
            except UserInputError as error:
                self.add_error("arms", str(error))
        opening = cleaned.get("status") == Study.Status.OPEN and "status" in self.changed_data
        if self.instance.pk and opening:
            # A new study's trials do not exist yet: StudyAdmin.save_related checks it once they do.
            try:
                services.study_stimuli_check(study=self.instance)
            except UserInputError as error:
                self.add_error("status", str(error))
        return cleaned


@admin.register(Study)
class StudyAdmin(admin.ModelAdmin):
    """Add a study with a generation run and arms: trials (every prompt x pair, 2 attention checks) are built
    on save, and the reference study's questions are added when none are given."""

    form = StudyAdminForm
    list_display = ["title", "slug", "status", "generation_run", "created_at", "dashboard"]
    list_filter = ["status"]
    prepopulated_fields = {"slug": ["title"]}
    inlines = [QuestionInline, TrialInline]
    actions = ["open_studies", "close_studies"]

    def get_readonly_fields(self, request, obj=None) -> list[str]:
        """A study with a locked analysis plan keeps the design it was preregistered with."""
        frozen = ["generation_run", "arms", "target_participants"] if obj and obj.plan_locked_at else []
        return [*super().get_readonly_fields(request, obj), *frozen]

    def get_changeform_initial_data(self, request) -> dict:
        return {
            "consent_text": services.DEFAULT_CONSENT,
            "instructions": services.DEFAULT_INSTRUCTIONS,
            **super().get_changeform_initial_data(request),
        }

    @admin.display(description="dashboard")
    def dashboard(self, obj: Study) -> str:
        return format_html('<a href="{}">open</a>', reverse("studies:dashboard", args=[obj.slug]))

    def save_related(self, request, form, formsets, change) -> None:
        super().save_related(request, form, formsets, change)
        if not form.instance.trials.exists():
            # The same service as create_study: the reference questions when none were given, then the trials.
            services.study_contents_build(study=form.instance)
            if form.instance.status == Study.Status.OPEN:
                try:
                    services.study_stimuli_check(study=form.instance)
                except UserInputError as error:
                    services.study_status_set(study=form.instance, status=Study.Status.DRAFT)
                    self.message_user(request, f"Kept as a draft: {error}", messages.ERROR)

    @admin.action(description="Open the selected studies")
    def open_studies(self, request, queryset) -> None:
        for study in queryset:
            try:
                services.study_status_set(study=study, status=Study.Status.OPEN)
            except UserInputError as error:
                self.message_user(request, str(error), messages.ERROR)

    @admin.action(description="Close the selected studies")
    def close_studies(self, request, queryset) -> None:
        for study in queryset:
            services.study_status_set(study=study, status=Study.Status.CLOSED)


@admin.register(Trial)
class TrialAdmin(admin.ModelAdmin):
    list_display = ["pk", "study", "prompt", "arm_a", "arm_b", "is_attention_check"]
    list_filter = ["study", "is_attention_check"]
    raw_id_fields = ["prompt", "image_a", "image_b"]

    def has_delete_permission(self, request, obj=None) -> bool:
        return False  # participants' stored trial orders refer to every trial


@admin.register(Participant)
class ParticipantAdmin(admin.ModelAdmin):
    formfield_overrides = {models.URLField: {"assume_scheme": "https"}}
    list_display = ["label", "study", "external_source", "consent", "position", "started_at", "finished_at"]
    list_filter = ["study", "consent", "external_source"]
    readonly_fields = ["code", "seed", "trial_order", "sides", "started_at"]


@admin.register(Response)
class ResponseAdmin(admin.ModelAdmin):
    list_display = ["participant", "trial", "question", "choice", "chosen_arm", "response_ms", "answered_at"]
    list_filter = ["participant__study", "question__key"]
