"""The landing page."""

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render


def home(request: HttpRequest) -> HttpResponse:
    """Show what peftlab is and where to go next."""
    return render(request, "home.html")
