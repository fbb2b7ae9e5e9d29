"""Generation's pages."""

from django.urls import path

from generation import views

app_name = "generation"
urlpatterns = [
    path("runs/", views.run_list, name="run_list"),
    path("runs/<int:pk>/", views.run_gallery, name="run_gallery"),
    path("runs/<int:pk>/download/", views.run_download, name="run_download"),
    path("runs/<int:pk>/images/<int:image_pk>.png", views.image, name="image"),
]
