"""The check a study passes before it opens: every image it will serve can be read.

Participants meet a missing file as a broken image on every page that shows it; checking once when the
study opens (create_study --open, the admin, the console, any status change to open) turns that into one
line for the researcher instead.
"""

from pathlib import Path

from generation.pngs import png_clean
from peftlab.errors import UserInputError
from studies.models import Question, Study, Trial
from studies.selectors import media_read, reference_source


def _unreadable(source: Path | str) -> str | None:
    """Why the image at `source` cannot be served (None when it can)."""
    try:
        png_clean(media_read(source=source), compress_level=1)
    except OSError as error:
        return error.strerror or error.__class__.__name__
    except UserInputError:
        return "not an image"
    return None


def study_stimuli_check(*, study: Study) -> None:
    """Raise UserInputError (one line) unless every stimulus and reference image `study` serves can be read.

    References count only when a question shows them. The error names the first bad file and how many there are.
    """
    trials = Trial.objects.filter(study=study).select_related("prompt", "image_a", "image_b")
    shows_references = Question.objects.filter(study=study, show_references=True).exists()
    sources: dict[Path | str, str] = {}
    for trial in trials:
        for image in (trial.image_a, trial.image_b):
            sources.setdefault(image.image.name, f"the {image.arm} image of {trial.prompt.landmark!r}")
        if shows_references:
            for reference in trial.prompt.reference_images:
                sources.setdefault(reference_source(reference), f"a reference image of {trial.prompt.landmark!r}")
    if not sources:
        raise UserInputError(f"study {study.slug!r} has no trials to show; build its trials before opening it.")
    bad = [(source, what, reason) for source, what in sources.items() if (reason := _unreadable(source))]
    if bad:
        source, what, reason = bad[0]
        more = f" (and {len(bad) - 1} more)" if len(bad) > 1 else ""
        raise UserInputError(
            f"study {study.slug!r} cannot open: {what} ({source}) cannot be read: {reason}{more}; restore the "
            "files under MEDIA_ROOT or re-import the stimuli, then open it again."
        )
