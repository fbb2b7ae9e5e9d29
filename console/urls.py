"""The researcher console's pages (staff only)."""

from django.urls import path

from console import views

app_name = "console"
urlpatterns = [
    path("", views.runs, name="runs"),
    path("runs.json", views.runs_json, name="runs_json"),
    path("runs/training/<int:pk>/", views.training_run_detail, name="training_run_detail"),
    path("runs/training/<int:pk>/loss.png", views.training_run_loss_chart, name="training_run_loss_chart"),
    path("runs/training/<int:pk>/adapters.zip", views.training_run_adapters, name="training_run_adapters"),
    path("runs/generation/<int:pk>/", views.generation_run_detail, name="generation_run_detail"),
    path("studies/", views.studies, name="studies"),
    path("jobs/<int:pk>/", views.job_detail, name="job_detail"),
    path("jobs/<int:pk>/cancel/", views.job_cancel_view, name="job_cancel"),
    path("jobs/<int:pk>/retry/", views.job_retry_view, name="job_retry"),
    path("datasets/new/", views.dataset_new, name="dataset_new"),
    path("training/new/", views.training_new, name="training_new"),
    path("generation/new/", views.generation_new, name="generation_new"),
    path("studies/new/", views.study_new, name="study_new"),
    path("studies/<slug:slug>/", views.study_detail, name="study_detail"),
    path("studies/<slug:slug>/status/", views.study_status, name="study_status"),
    path("prompts/", views.prompt_sets, name="prompt_sets"),
    path("prompts/builtin/", views.prompt_set_builtin, name="prompt_set_builtin"),
]
