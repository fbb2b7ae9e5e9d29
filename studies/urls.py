"""Studies's pages: the participant entry and pages (no login), blinded images, the staff dashboard."""

from django.urls import path

from studies import views

app_name = "studies"
urlpatterns = [
    path("<slug:slug>/", views.entry, name="entry"),
    path("<slug:slug>/p/<str:code>/", views.participant_page, name="page"),
    path("<slug:slug>/p/<str:code>/m/<str:token>.png", views.media, name="media"),
    path("<slug:slug>/dashboard/", views.dashboard, name="dashboard"),
    path("<slug:slug>/responses.csv", views.responses_csv, name="responses_csv"),
]
