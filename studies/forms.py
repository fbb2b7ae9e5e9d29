"""Studies' participant forms (answers to trials are plain buttons named "choice": left/right/both/neither)."""

import re

from django import forms
from django.core.validators import RegexValidator

from studies.services import FEEDBACK_MAX_CHARS, feedback_normalize


class ConsentForm(forms.Form):
    """Agree or decline to take part; `entry` is the form's one-time value (a double post makes one person)."""

    decision = forms.ChoiceField(choices=[("agree", "I agree"), ("decline", "I do not agree")])
    entry = forms.CharField(max_length=32, validators=[RegexValidator(r"^[A-Za-z0-9_-]+$")])
    # Filled by the page's script ("390x844", "1"/"0"); absent without JavaScript. Never a reason to refuse.
    viewport = forms.CharField(required=False, max_length=20)
    touch = forms.CharField(required=False, max_length=1)

    def device(self) -> tuple[tuple[int, int] | None, bool | None]:
        """The viewport (width, height) and touch input the browser reported, None where it reported nothing."""
        match = re.fullmatch(r"(\d{1,5})x(\d{1,5})", self.cleaned_data.get("viewport", ""))
        viewport = (int(match.group(1)), int(match.group(2))) if match else None
        return viewport, {"1": True, "0": False}.get(self.cleaned_data.get("touch", ""))


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
