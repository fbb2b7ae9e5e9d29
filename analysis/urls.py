"""Analysis's pages."""

from django.urls import path

from analysis import views

app_name = "analysis"
urlpatterns = [
    path("<slug:slug>/", views.report, name="report"),
    path("<slug:slug>/headline/", views.headline, name="headline"),
    path("<slug:slug>/lock-plan/", views.lock_plan, name="lock_plan"),
    path("<slug:slug>/responses.<str:fmt>", views.export, name="export"),
    path("<slug:slug>/participants.<str:fmt>", views.participants_export, name="participants_export"),
    path("<slug:slug>/charts/<slug:name>.<str:fmt>", views.chart, name="chart"),
]
