"""peftlab's URLs: the admin, django-rq's dashboard, and each app's pages."""

from django.conf import settings
from django.conf.urls.static import static
from django.contrib import admin
from django.urls import include, path

from peftlab import views

urlpatterns = [
    path("", views.home, name="home"),
    path("admin/", admin.site.urls),
    path("django-rq/", include("django_rq.urls")),
    path("console/", include("console.urls")),
    path("generation/", include("generation.urls")),
    path("studies/", include("studies.urls")),
    path("analysis/", include("analysis.urls")),
]
if settings.DEBUG:
    urlpatterns += static(settings.MEDIA_URL, document_root=settings.MEDIA_ROOT)
