"""The researcher console: start jobs, watch their progress, read their errors (staff only)."""

from django.contrib import messages
from django.contrib.admin.views.decorators import staff_member_required
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_POST

from peftlab.console.forms import DatasetPrepareForm
from peftlab.errors import UserInputError
from peftlab.jobs import DEFAULT_QUEUE, job_cancel, job_enqueue, job_retry, jobs_reconcile
from peftlab.models import Job
from trainer.jobs import dataset_prepare_job

RECENT_JOBS = 100


def job_summary(job: Job) -> dict:
    """What the runs list shows of a job, as JSON for the polling script."""
    return {
        "id": job.pk,
        "kind": job.kind,
        "status": job.status,
        "percent": round(job.percent, 1),
        "stage": job.stage,
        "done": job.done,
        "total": job.total,
        "metrics": job.metrics,
        "active": job.is_active,
    }


def recent_jobs() -> list[Job]:
    """The latest jobs, after failing those whose worker died."""
    jobs_reconcile()
    return list(Job.objects.select_related("content_type")[:RECENT_JOBS])


@staff_member_required
def runs(request: HttpRequest) -> HttpResponse:
    """Every recent job with its status and progress."""
    jobs = recent_jobs()
    return render(request, "console/runs.html", {"jobs": jobs, "any_active": any(j.is_active for j in jobs)})


@staff_member_required
def runs_json(request: HttpRequest) -> JsonResponse:
    """The runs list's live data, polled by its script."""
    return JsonResponse({"jobs": [job_summary(job) for job in recent_jobs()]})


@staff_member_required
def job_detail(request: HttpRequest, pk: int) -> HttpResponse:
    """One job: progress, metrics, log lines, the full error, and its run."""
    jobs_reconcile()
    job = get_object_or_404(Job.objects.select_related("content_type", "retry_of"), pk=pk)
    return render(request, "console/job_detail.html", {"job": job, "run": job.run})


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
    form = form_class(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            job = start(form)
        except UserInputError as error:
            form.add_error(None, str(error))
        else:
            messages.success(request, f"Job {job.pk} queued.")
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
