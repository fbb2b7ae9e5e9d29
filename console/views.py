"""The researcher console: every run and study, start jobs, watch their progress, read errors in full (staff only)."""

import tempfile
from pathlib import Path

from django.conf import settings
from django.contrib import messages
from django.contrib.admin.views.decorators import staff_member_required
from django.http import FileResponse, Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views.decorators.http import require_POST

from console import selectors
from console.forms import (
    DatasetPrepareForm,
    GenerationStartForm,
    PromptSetUploadForm,
    StudyBuildForm,
    StudyRunForm,
    StudySettingsForm,
    TrainingStartForm,
)
from generation.jobs import generation_job_enqueue
from generation.models import GenerationRun
from generation.services import prompt_set_install_builtin, prompt_set_upload
from peftlab.errors import UserInputError
from peftlab.jobs import DEFAULT_QUEUE, job_cancel, job_enqueue, job_retry
from peftlab.models import Job
from studies.models import Study
from studies.services import study_create_from_generation, study_settings_update, study_status_set
from trainer.jobs import dataset_prepare_job, training_job_enqueue
from trainer.models import TrainingRun
from trainer.selectors import training_run_adapters_zip


def run_context(run: TrainingRun | GenerationRun | None) -> dict:
    """The template context that shows a training or generation run: metrics, loss curve, jobs, studies."""
    if isinstance(run, TrainingRun):
        detail = selectors.training_run_detail(run=run)
        return detail | {"is_training": True, "loss_chart": selectors.loss_chart_path(run) is not None}
    if isinstance(run, GenerationRun):
        return selectors.generation_run_detail(run=run) | {"is_generation": True}
    return {}


@staff_member_required
def runs(request: HttpRequest) -> HttpResponse:
    """Every recent training and generation run, however started, with its status and latest job's progress."""
    rows = selectors.console_run_rows()
    jobs = selectors.other_jobs()
    any_active = any(row.is_active for row in rows) or any(job.is_active for job in jobs)
    return render(request, "console/runs.html", {"rows": rows, "jobs": jobs, "any_active": any_active})


@staff_member_required
def runs_json(request: HttpRequest) -> JsonResponse:
    """The runs list's live data, polled by its script: runs, and the jobs that are not a run's."""
    return JsonResponse(
        {
            "runs": [selectors.run_summary(row) for row in selectors.console_run_rows()],
            "jobs": [selectors.job_summary(job) for job in selectors.other_jobs()],
        }
    )


@staff_member_required
def training_run_detail(request: HttpRequest, pk: int) -> HttpResponse:
    """One training run: config, metrics, loss curve, output files, its error in full, its jobs and studies."""
    run = get_object_or_404(TrainingRun.objects.select_related("dataset"), pk=pk)
    return render(request, "console/run_detail.html", {"run": run} | run_context(run))


@staff_member_required
def training_run_loss_chart(request: HttpRequest, pk: int) -> FileResponse:
    """A training run's loss.png, as the training loop drew it (one chart, not a second drawing)."""
    path = selectors.loss_chart_path(get_object_or_404(TrainingRun, pk=pk))
    if path is None:
        raise Http404(f"training run {pk} has no loss.png yet: it is drawn when the run ends.")
    return FileResponse(path.open("rb"), content_type="image/png")


@staff_member_required
def training_run_adapters(request: HttpRequest, pk: int) -> FileResponse:
    """A finished run's adapters as a zip: diffusers, kohya and A1111 files, run.json and a README."""
    run = get_object_or_404(TrainingRun, pk=pk)
    # A temporary file rather than memory: a LoRA of a large model is hundreds of megabytes.
    stream = tempfile.TemporaryFile()
    try:
        training_run_adapters_zip(run=run, stream=stream)
    except UserInputError as error:
        stream.close()
        raise Http404(str(error)) from None
    stream.seek(0)
    return FileResponse(
        stream, as_attachment=True, filename=f"training-run-{run.pk}-{run.method}-adapters.zip"
    )


@staff_member_required
def generation_run_detail(request: HttpRequest, pk: int) -> HttpResponse:
    """One generation run: config, image count, its error in full, its jobs, gallery and studies."""
    run = get_object_or_404(GenerationRun.objects.select_related("prompt_set"), pk=pk)
    return render(request, "console/run_detail.html", {"run": run} | run_context(run))


@staff_member_required
def studies(request: HttpRequest) -> HttpResponse:
    """Every recent study with its participants and links to its dashboard, entry page and report."""
    return render(request, "console/studies.html", {"studies": selectors.study_list()})


@staff_member_required
def job_detail(request: HttpRequest, pk: int) -> HttpResponse:
    """One job: progress, metrics, log lines, the full error, and its run."""
    job = get_object_or_404(Job.objects.select_related("content_type", "retry_of"), pk=pk)
    run = job.run
    context = {"job": job, "run": run, "stale_after_s": settings.PEFTLAB_JOB_STALE_S}
    return render(request, "console/job_detail.html", context | run_context(run))


@staff_member_required
@require_POST
def job_cancel_view(request: HttpRequest, pk: int) -> HttpResponse:
    """Cancel a queued job, or ask a running one to stop."""
    job = get_object_or_404(Job, pk=pk)
    try:
        job_cancel(job=job)
        messages.success(request, f"Job {job.pk}: cancel requested.")
    except UserInputError as error:
        messages.error(request, str(error))
    return redirect("console:job_detail", pk=job.pk)


@staff_member_required
@require_POST
def job_retry_view(request: HttpRequest, pk: int) -> HttpResponse:
    """Start a failed or cancelled job's work again, resuming where the job function can."""
    job = get_object_or_404(Job, pk=pk)
    try:
        retry = job_retry(job=job)
    except UserInputError as error:
        messages.error(request, str(error))
        return redirect("console:job_detail", pk=job.pk)
    messages.success(request, f"Job {retry.pk} retries job {job.pk}.")
    return redirect("console:job_detail", pk=retry.pk)


def start_form(request: HttpRequest, form_class: type, template_title: str, start) -> HttpResponse:
    """Show `form_class`; on a valid POST call `start(form)`, which enqueues a job and returns it."""
    form = form_class(request.POST or None, initial=request.GET.dict())
    if request.method == "POST" and form.is_valid():
        try:
            job = start(form)
        except UserInputError as error:
            form.add_error(None, str(error))
        else:
            messages.success(request, f"Job {job.pk} queued. {getattr(form, 'notice', '')}".strip())
            return redirect("console:job_detail", pk=job.pk)
    return render(request, "console/form.html", {"form": form, "title": template_title})


@staff_member_required
def dataset_new(request: HttpRequest) -> HttpResponse:
    """Prepare a dataset in the background (a light job on the default queue)."""
    return start_form(
        request,
        DatasetPrepareForm,
        "Prepare a dataset",
        lambda form: job_enqueue(
            kind=Job.Kind.DATASET, func=dataset_prepare_job, kwargs=form.job_kwargs(), queue=DEFAULT_QUEUE
        ),
    )


@staff_member_required
def training_new(request: HttpRequest) -> HttpResponse:
    """Start a training run on the gpu queue."""
    return start_form(
        request,
        TrainingStartForm,
        "Start a training run",
        lambda form: training_job_enqueue(
            method=form.cleaned_data["method"],
            dataset_dir=Path(form.cleaned_data["dataset"].path),
            output=form.cleaned_data["output"],
            config=form.cleaned_data["config"],
            processes=form.cleaned_data["processes"],
        ),
    )


@staff_member_required
def generation_new(request: HttpRequest) -> HttpResponse:
    """Render a prompt set with each arm on the gpu queue."""
    return start_form(
        request,
        GenerationStartForm,
        "Start a generation run",
        lambda form: generation_job_enqueue(
            prompt_set=form.cleaned_data["prompt_set"],
            config=form.cleaned_data["config"],
            name=form.cleaned_data["name"],
        ),
    )


@staff_member_required
def prompt_sets(request: HttpRequest) -> HttpResponse:
    """Every prompt set; upload a new one (JSON or CSV with reference images), or add the built-in set."""
    form = PromptSetUploadForm(request.POST or None, request.FILES or None)
    if request.method == "POST" and form.is_valid():
        try:
            prompt_set = prompt_set_upload(**form.upload_kwargs())
        except UserInputError as error:
            form.add_error(None, str(error))
        else:
            count = prompt_set.prompts.count()
            messages.success(
                request, f"Prompt set {prompt_set.name}: {count} prompt{'s' * (count != 1)} loaded."
            )
            return redirect(f"{reverse('console:generation_new')}?prompt_set={prompt_set.pk}")
    context = {"form": form, "prompt_sets": selectors.prompt_set_list()}
    return render(request, "console/prompt_sets.html", context)


@staff_member_required
@require_POST
def prompt_set_builtin(request: HttpRequest) -> HttpResponse:
    """Add (or complete) the built-in landmark prompt set."""
    prompt_set = prompt_set_install_builtin()
    messages.success(request, f"The built-in set {prompt_set.name} has {prompt_set.prompts.count()} prompts.")
    return redirect("console:prompt_sets")


@staff_member_required
def study_new(request: HttpRequest) -> HttpResponse:
    """The study builder: pick a finished generation run, then arms, questions, checks, recruitment, completion."""
    picker = StudyRunForm(request.GET if "generation_run" in request.GET else None)
    if not picker.is_bound or not picker.is_valid():
        return render(request, "console/study_new.html", {"picker": picker})
    run = picker.cleaned_data["generation_run"]
    form = StudyBuildForm(request.POST or None, run=run)
    if request.method == "POST" and form.is_valid():
        try:
            study = study_create_from_generation(**form.study_options())
        except UserInputError as error:
            form.add_error(None, str(error))
        else:
            messages.success(request, f"Study {study.slug} created as a draft: preview it, then open it.")
            return redirect("console:study_detail", slug=study.slug)
    return render(request, "console/study_new.html", {"picker": picker, "form": form, "run": run})


@staff_member_required
def study_detail(request: HttpRequest, slug: str) -> HttpResponse:
    """One study: its arms, questions and settings (editable), links, and the buttons that open and close it."""
    study = get_object_or_404(Study.objects.select_related("generation_run"), slug=slug)
    form = StudySettingsForm(request.POST or None, study=study)
    if request.method == "POST" and form.is_valid():
        try:
            study_settings_update(**form.settings())
        except UserInputError as error:
            form.add_error(None, str(error))
        else:
            messages.success(request, "Settings saved.")
            return redirect("console:study_detail", slug=study.slug)
    context = {"study": study, "form": form} | selectors.study_summary(study=study)
    return render(request, "console/study_detail.html", context)


@staff_member_required
@require_POST
def study_status(request: HttpRequest, slug: str) -> HttpResponse:
    """Open, close, or return a study to draft (the buttons on its page)."""
    study = get_object_or_404(Study, slug=slug)
    try:
        study_status_set(study=study, status=request.POST.get("status", ""))
    except UserInputError as error:
        messages.error(request, str(error))
    else:
        messages.success(request, f"Study {study.slug} is {study.status}.")
    return redirect("console:study_detail", slug=study.slug)
