"""Studies's pages: the participant entry and pages (no login), blinded images, the staff dashboard."""

from django.urls import path

from studies import views

app_name = "studies"
urlpatterns = [
    path("<slug:slug>/", views.entry, name="entry"),
    # Codes and tokens are URL-safe by construction: anything else (a NUL byte, say) is a 404.
    path("<slug:slug>/p/<slug:code>/", views.participant_page, name="page"),
    path("<slug:slug>/p/<slug:code>/m/<slug:token>.png", views.media, name="media"),
    path("<slug:slug>/dashboard/", views.dashboard, name="dashboard"),
    path("<slug:slug>/preview/", views.preview, name="preview"),
    path("<slug:slug>/preview/<int:seed>/m/<slug:token>.png", views.preview_media, name="preview_media"),
]
