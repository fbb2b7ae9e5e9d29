"""Studies' participant forms (answers to trials are plain buttons named "choice": left/right/both/neither)."""

from django import forms
from django.core.validators import RegexValidator

from studies.services import FEEDBACK_MAX_CHARS, feedback_normalize


class ConsentForm(forms.Form):
    """Agree or decline to take part; `entry` is the form's one-time value (a double post makes one person)."""

    decision = forms.ChoiceField(choices=[("agree", "I agree"), ("decline", "I do not agree")])
    entry = forms.CharField(max_length=32, validators=[RegexValidator(r"^[A-Za-z0-9_-]+$")])


class FeedbackForm(forms.Form):
    """Optional free-text feedback before finishing."""

    feedback = forms.CharField(
        required=False,
        strip=False,
        label="Anything you would like to tell us? (optional)",
        # Chromium counts a line break twice against maxlength (the CRLF it posts); the server counts one after
        # normalising, so whatever the browser lets through fits, and anything longer is refused visibly.
        widget=forms.Textarea(attrs={"rows": 4, "maxlength": FEEDBACK_MAX_CHARS}),
    )

    def clean_feedback(self) -> str:
        """Normalised feedback, refused (not cut) when it is too long."""
        feedback = feedback_normalize(self.cleaned_data["feedback"])
        if len(feedback) > FEEDBACK_MAX_CHARS:
            raise forms.ValidationError(
                f"Please shorten your feedback to {FEEDBACK_MAX_CHARS:,} characters "
                f"(it has {len(feedback):,})."
            )
        return feedback
