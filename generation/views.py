"""Generation's staff pages: the list of runs, each run's gallery, its images and its zip download."""

import tempfile

from django.contrib.admin.views.decorators import staff_member_required
from django.http import FileResponse, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, render

from generation.models import GeneratedImage, GenerationRun
from generation.selectors import generation_run_grid, generation_run_list, generation_run_zip


@staff_member_required
def run_list(request: HttpRequest) -> HttpResponse:
    """Every generation run with its status and image count."""
    return render(request, "generation/run_list.html", {"runs": generation_run_list()})


@staff_member_required
def run_gallery(request: HttpRequest, pk: int) -> HttpResponse:
    """A run's images: prompts as rows, arms as columns, seeds side by side, parameters on hover."""
    run = get_object_or_404(GenerationRun.objects.select_related("prompt_set"), pk=pk)
    seeds, rows = generation_run_grid(run=run)
    return render(request, "generation/run_gallery.html", {"run": run, "seeds": seeds, "rows": rows})


@staff_member_required
def run_download(request: HttpRequest, pk: int) -> FileResponse:
    """The run as a zip: its images and a manifest.csv."""
    run = get_object_or_404(GenerationRun, pk=pk)
    # A temporary file rather than memory: a large run's zip can be hundreds of megabytes.
    stream = tempfile.TemporaryFile()
    generation_run_zip(run=run, stream=stream)
    stream.seek(0)
    return FileResponse(stream, as_attachment=True, filename=f"generation-run-{run.pk}.zip")


@staff_member_required
def image(request: HttpRequest, pk: int, image_pk: int) -> FileResponse:
    """One image of a run, for the gallery (media files are served by no public URL)."""
    stored = get_object_or_404(GeneratedImage, pk=image_pk, run_id=pk)
    response = FileResponse(stored.image.open("rb"), content_type="image/png")
    response["Cache-Control"] = "private, max-age=3600"
    return response
