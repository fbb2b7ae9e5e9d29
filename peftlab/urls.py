"""peftlab's URLs: the admin, django-rq's dashboard, each app's pages, and /healthz.

Each app's URLconf is named by string and imported only when a URL under its prefix is resolved or one of
its names is reversed: a participant's request never imports the console, the analysis pages or what they
import (torch, diffusers, pandas, matplotlib).
"""

from django.contrib import admin
from django.urls import URLResolver, path
from django.urls.resolvers import RoutePattern

from peftlab import views


def lazy_include(prefix: str, urlconf: str, namespace: str) -> URLResolver:
    """`path(prefix, include(urlconf))`, importing `urlconf` on first use rather than at startup."""
    return URLResolver(RoutePattern(prefix), urlconf, app_name=namespace, namespace=namespace)


urlpatterns = [
    path("", views.home, name="home"),
    path("healthz", views.healthz, name="healthz"),
    path("admin/", admin.site.urls),
    lazy_include("django-rq/", "django_rq.urls", "django_rq"),
    lazy_include("console/", "console.urls", "console"),
    lazy_include("generation/", "generation.urls", "generation"),
    lazy_include("studies/", "studies.urls", "studies"),
    lazy_include("analysis/", "analysis.urls", "analysis"),
]
