"""Studies' participant forms (answers to trials are plain buttons named "choice": left/right/both/neither)."""

from django import forms


class ConsentForm(forms.Form):
    """Agree or decline to take part."""

    decision = forms.ChoiceField(choices=[("agree", "I agree"), ("decline", "I do not agree")])


class FeedbackForm(forms.Form):
    """Optional free-text feedback before finishing."""

    feedback = forms.CharField(
        required=False,
        max_length=5000,
        label="Anything you would like to tell us? (optional)",
        widget=forms.Textarea(attrs={"rows": 4}),
    )
