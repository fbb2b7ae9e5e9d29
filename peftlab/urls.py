"""peftlab's URLs: the admin, django-rq's dashboard, each app's pages, and /healthz.

Each app's URLconf is named by string and imported only when a URL under its prefix is resolved or one of
its names is reversed: a participant's request never imports the console, the analysis pages or what they
import (torch, diffusers, pandas, matplotlib).
"""

from django.contrib import admin
from django.urls import URLResolver, path
from django.urls.resolvers import RoutePattern

from peftlab import views


class LazyURLResolver(URLResolver):
    """A namespaced include whose URLconf is imported only when one of its URLs is resolved or reversed.

    Django's root resolver populates every child while building its own reverse tables, which would import
    every app's views on the first `reverse()`; a namespaced child contributes nothing to those tables, so
    it fills its own only when asked for them.
    """

    _wanted = False

    def _populate(self) -> None:
        if self._wanted:
            super()._populate()

    def _want(self) -> None:
        self._wanted = True

    @property
    def reverse_dict(self):
        self._want()
        return super().reverse_dict

    @property
    def namespace_dict(self):
        self._want()
        return super().namespace_dict

    @property
    def app_dict(self):
        self._want()
        return super().app_dict


def lazy_include(prefix: str, urlconf: str, namespace: str) -> URLResolver:
    """`path(prefix, include(urlconf))` for a URLconf with `app_name = namespace`, imported on first use."""
    return LazyURLResolver(RoutePattern(prefix), urlconf, app_name=namespace, namespace=namespace)


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
