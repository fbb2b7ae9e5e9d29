"""Studies' records: blind pairwise questionnaires over a generation run's images, and their answers.

A `Study` compares arms (e.g. base, lora, ti) of one `GenerationRun`. Each `Trial` pairs two arms' images of
one prompt; each `Question` is asked about every (non-attention-check) trial on a page of its own. A
`Participant` answers the trials in a seeded order with seeded, counterbalanced sides, and each answer is one
`Response` row (unique per participant x trial x question). `studies.selectors.study_response_rows` flattens
the responses for analysis.
"""

import secrets
from dataclasses import dataclass

from django.core.exceptions import ValidationError
from django.db import models
from django.db.models import F, Q
from django.db.models.signals import post_delete, post_save
from django.dispatch import receiver

from generation.models import GeneratedImage, GenerationRun, Prompt

CHOICES = ("left", "right", "both", "neither")
EXTRA_OPTIONS = ("both", "neither")


def new_participant_code() -> str:
    """A random, unguessable participant code (it is the participant's only credential)."""
    return secrets.token_urlsafe(12)


def new_media_secret() -> str:
    """A random per-study key for image tokens: without it a token reveals nothing, whatever SECRET_KEY is."""
    return secrets.token_hex(32)


def new_completion_code() -> str:
    """A random completion code to paste into Prolific/MTurk."""
    return secrets.token_hex(4).upper()


class Study(models.Model):
    """A questionnaire: participants compare pairs of `arms` of `generation_run`, blind.

    status: draft (only staff may try it), open (anyone with the link), closed (a polite page).
    completion_code is shown on the last page, or appended as `cc=CODE` to completion_redirect_url (Prolific).
    The title, consent text and instructions are shown to participants: keep arm names out of them.
    """

    class Status(models.TextChoices):
        DRAFT = "draft"
        OPEN = "open"
        CLOSED = "closed"

    title = models.CharField(max_length=200, help_text="Shown to participants: do not name the arms.")
    slug = models.SlugField(max_length=100, unique=True, help_text="The entry URL is /studies/<slug>/.")
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.DRAFT)
    consent_text = models.TextField()
    instructions = models.TextField()
    target_participants = models.PositiveIntegerField(default=50)
    completion_code = models.CharField(max_length=50, default=new_completion_code)
    completion_redirect_url = models.URLField(
        blank=True,
        max_length=500,
        help_text="e.g. https://app.prolific.com/submissions/complete (cc=CODE is appended); empty shows the code.",
    )
    generation_run = models.ForeignKey(GenerationRun, on_delete=models.PROTECT, related_name="studies")
    arms = models.JSONField(default=list, help_text='Arms compared, e.g. ["base", "lora", "ti"].')
    media_secret = models.CharField(max_length=64, default=new_media_secret, editable=False)
    # Raised whenever a trial or question changes: web workers keep a study's contents in memory per version.
    contents_version = models.PositiveIntegerField(default=0, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    # Recruitment: no more participants than this are ever admitted (in progress included); empty = no cap.
    max_participants = models.PositiveIntegerField(
        null=True, blank=True, help_text="Admit at most this many participants (in progress included)."
    )
    # Completion per outcome: {"finished"|"failed_attention"|"declined"|"full": {"code": ..., "redirect_url": ...}}.
    completion_codes = models.JSONField(default=dict, blank=True)
    # Display names of the arms in reports and the console ({"lora": "LoRA (rank 8)"}); never shown to participants.
    arm_labels = models.JSONField(default=dict, blank=True)
    # Preregistration: the frozen analysis plan, its SHA-256, when it was locked, and deviations recorded since.
    plan = models.JSONField(null=True, blank=True, editable=False)
    plan_sha256 = models.CharField(max_length=64, blank=True, editable=False)
    plan_locked_at = models.DateTimeField(null=True, blank=True, editable=False)
    plan_deviations = models.JSONField(default=list, blank=True, editable=False)
    # A preregistered stopping rule met: when admission stopped and why (those in progress may finish).
    stopped_at = models.DateTimeField(null=True, blank=True, editable=False)
    stopped_reason = models.TextField(blank=True, editable=False)
    # Adaptive allocation for three or more arms: each arm pair's share of the next participants' pages.
    pair_weights = models.JSONField(default=dict, blank=True, editable=False)

    class Meta:
        ordering = ["-created_at"]
        verbose_name_plural = "studies"

    def __str__(self) -> str:
        return self.title


class Question(models.Model):
    """A question asked about each pair: the participant picks left or right, or one of `options`.

    key: a short slug used in exports (e.g. "artwork", "style", "identity").
    options: extra answers beside left/right, a subset of ["both", "neither"] ("both equally", "neither").
    show_references: show the prompt's reference images above the pair (e.g. for style or identity).
    """

    study = models.ForeignKey(Study, on_delete=models.CASCADE, related_name="questions")
    position = models.PositiveIntegerField(default=0)
    key = models.SlugField(max_length=50)
    text = models.TextField()
    options = models.JSONField(default=list, blank=True, help_text='Extra answers: "both", "neither".')
    show_references = models.BooleanField(default=False)
    label = models.CharField(max_length=100, blank=True, help_text="Display name in reports (e.g. Style match).")

    class Meta:
        ordering = ["study", "position", "id"]
        constraints = [models.UniqueConstraint(fields=["study", "key"], name="unique_question_key")]

    def __str__(self) -> str:
        return self.key

    def clean(self) -> None:
        """Only "both" and "neither" may join left/right."""
        unknown = sorted(set(self.options or []) - set(EXTRA_OPTIONS))
        if unknown:
            raise ValidationError({"options": f"unknown options {unknown}; use both/neither."})


class Trial(models.Model):
    """A pair of images of one prompt: `image_a` (arm_a) and `image_b` (arm_b); sides are drawn per participant.

    An attention check (`is_attention_check`) is an instructed-response trial: it asks no study question but
    shows `instruction` ("please choose the image on the left") and its correct answer is `expected_choice`.
    """

    study = models.ForeignKey(Study, on_delete=models.CASCADE, related_name="trials")
    position = models.PositiveIntegerField(default=0)
    prompt = models.ForeignKey(Prompt, on_delete=models.PROTECT, related_name="trials")
    arm_a = models.CharField(max_length=50)
    arm_b = models.CharField(max_length=50)
    image_a = models.ForeignKey(GeneratedImage, on_delete=models.PROTECT, related_name="+")
    image_b = models.ForeignKey(GeneratedImage, on_delete=models.PROTECT, related_name="+")
    is_attention_check = models.BooleanField(default=False)
    instruction = models.CharField(max_length=300, blank=True, help_text="Attention checks only.")
    expected_choice = models.CharField(
        max_length=10,
        blank=True,
        choices=[("left", "left"), ("right", "right")],
        help_text="Attention checks only.",
    )

    class Meta:
        ordering = ["study", "position", "id"]

    def __str__(self) -> str:
        kind = "attention check" if self.is_attention_check else f"{self.arm_a} vs {self.arm_b}"
        return f"trial {self.pk}: {self.prompt.landmark}, {kind}"


def study_contents_changed(study_id: int) -> None:
    """Raise the study's contents_version, so every web worker reloads its trials and questions."""
    Study.objects.filter(pk=study_id).update(contents_version=F("contents_version") + 1)


@receiver([post_save, post_delete], sender=Question)
@receiver([post_save, post_delete], sender=Trial)
def _contents_saved(sender, instance: "Question | Trial", **kwargs) -> None:
    # Admin edits and deletes arrive here; bulk_create sends no signal (study_trials_build calls the above).
    study_contents_changed(instance.study_id)


@receiver(post_save, sender=Prompt)
def _prompt_saved(sender, instance: Prompt, **kwargs) -> None:
    # Trials are kept with their prompt (its reference images are shown): an edited prompt reloads its studies.
    Study.objects.filter(trials__prompt=instance).update(contents_version=F("contents_version") + 1)


class Participant(models.Model):
    """One person's run through a study; the server owns where they are (`position`).

    code: the random secret in the participant's URL. external_id/external_source: the Prolific PID or MTurk
    worker id (unique per study when given). seed: draws trial_order (trial pks in the order shown) and sides
    ({trial pk as str: arm shown on the left}). position: index of the current page (0 = instructions, then
    one page per trial x question, then feedback, then done). page_shown_at: when the current page was first
    shown (response times are measured from it).
    """

    class Consent(models.TextChoices):
        GIVEN = "given"
        DECLINED = "declined"

    class Source(models.TextChoices):
        NONE = "", "direct link"
        PROLIFIC = "prolific"
        MTURK = "mturk"
        DEMO = "demo", "simulated (demo pilot)"

    study = models.ForeignKey(Study, on_delete=models.CASCADE, related_name="participants")
    code = models.CharField(max_length=32, unique=True, default=new_participant_code)
    external_id = models.CharField(max_length=100, blank=True)
    external_source = models.CharField(max_length=20, choices=Source.choices, blank=True)
    external_study_id = models.CharField(
        max_length=100, blank=True, help_text="Prolific STUDY_ID or MTurk hitId."
    )
    external_session_id = models.CharField(
        max_length=100, blank=True, help_text="Prolific SESSION_ID or MTurk assignmentId."
    )
    turk_submit_to = models.URLField(blank=True, max_length=300)
    entry_nonce = models.CharField(
        max_length=32, blank=True, help_text="The consent form's one-time value: a double post makes one row."
    )
    seed = models.BigIntegerField()
    trial_order = models.JSONField(default=list)
    sides = models.JSONField(default=dict)
    position = models.PositiveIntegerField(default=0)
    page_shown_at = models.DateTimeField(null=True, blank=True)
    consent = models.CharField(max_length=10, choices=Consent.choices)
    started_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    feedback = models.TextField(blank=True)
    user_agent = models.CharField(max_length=300, blank=True)
    # A pilot participant is left out of the analysis and exports unless asked (--include-pilot).
    is_pilot = models.BooleanField(default=False)
    # What the participant's browser reported: the viewport, touch input, the browser family and version.
    viewport_width = models.PositiveIntegerField(null=True, blank=True)
    viewport_height = models.PositiveIntegerField(null=True, blank=True)
    is_touch = models.BooleanField(null=True, blank=True)
    browser_family = models.CharField(max_length=50, blank=True)
    browser_version = models.CharField(max_length=30, blank=True)

    class Meta:
        ordering = ["study", "id"]
        constraints = [
            models.UniqueConstraint(
                fields=["study", "external_id"],
                condition=~Q(external_id=""),
                name="unique_external_participant",
            ),
            models.UniqueConstraint(
                fields=["study", "entry_nonce"], condition=~Q(entry_nonce=""), name="unique_entry_nonce"
            ),
        ]

    def __str__(self) -> str:
        return self.label

    @property
    def label(self) -> str:
        """The pseudonymous name used in exports ("P0007")."""
        return f"P{self.pk:04d}"

    def shown(self, trial: "Trial") -> "Shown":
        """Which arm and image this participant sees on each side of `trial` (the one "as shown" rule)."""
        left_arm = self.sides[str(trial.pk)]
        if left_arm == trial.arm_a:
            return Shown(trial.arm_a, trial.arm_b, trial.image_a_id, trial.image_b_id)
        return Shown(trial.arm_b, trial.arm_a, trial.image_b_id, trial.image_a_id)


@dataclass(frozen=True)
class Shown:
    """A trial as one participant sees it: the arm and image (pk) on the left and on the right."""

    left_arm: str
    right_arm: str
    left_image_id: int
    right_image_id: int

    def arm(self, choice: str) -> str:
        """The arm behind a choice ("" for both/neither)."""
        return {"left": self.left_arm, "right": self.right_arm}.get(choice, "")


class Response(models.Model):
    """One answer: which side the participant chose for one question about one trial.

    left_arm/right_arm: the arms as shown. choice: "left", "right", "both" or "neither". chosen_arm: the arm
    behind the chosen side ("" for both/neither). question is empty for attention-check trials.
    response_ms: answered_at - shown_at (server clock, from the page's first display).
    """

    participant = models.ForeignKey(Participant, on_delete=models.CASCADE, related_name="responses")
    # RESTRICT: a trial or question with answers cannot be deleted on its own (only with its study).
    trial = models.ForeignKey(Trial, on_delete=models.RESTRICT, related_name="responses")
    question = models.ForeignKey(
        Question, on_delete=models.RESTRICT, null=True, blank=True, related_name="responses"
    )
    left_arm = models.CharField(max_length=50)
    right_arm = models.CharField(max_length=50)
    choice = models.CharField(max_length=10, choices=[(c, c) for c in CHOICES])
    chosen_arm = models.CharField(max_length=50, blank=True)
    response_ms = models.PositiveIntegerField()
    # Time on the page measured in the browser (from display to the click); null when the browser sent none.
    client_ms = models.PositiveIntegerField(null=True, blank=True)
    shown_at = models.DateTimeField()
    answered_at = models.DateTimeField()

    class Meta:
        ordering = ["participant", "answered_at", "id"]
        constraints = [
            models.UniqueConstraint(
                fields=["participant", "trial", "question"], name="unique_response_per_question"
            ),
            # NULLs never collide in a unique index: attention checks (no question) need their own.
            models.UniqueConstraint(
                fields=["participant", "trial"],
                condition=Q(question__isnull=True),
                name="unique_response_per_attention_check",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.participant} / trial {self.trial_id} / {self.question_id}: {self.choice}"
