"""Headers every page gets, and the rules for the pages participants see (which MTurk shows inside a frame).

- `SecurityHeadersMiddleware`: a Content-Security-Policy with a fresh nonce per request (inline scripts carry
  `nonce="{{ csp_nonce }}"`), `frame-ancestors 'none'` except on participant pages, `Cache-Control: private,
  no-store` on every response that sets no caching of its own (staff pages, exports), and a size limit on
  multipart bodies (Django limits form fields, not uploaded files).
- `participant_view`: the page may be framed by `PEFTLAB_FRAME_ANCESTORS` (MTurk's two origins), carries no
  X-Frame-Options, and its posts are checked by where they come from (Sec-Fetch-Site, else Origin) instead of
  by the CSRF cookie, which a browser does not send inside a cross-site frame. The participant's code travels
  in the URL, so nothing else needs a cookie.
"""

import logging
import secrets
from collections.abc import Callable
from functools import wraps

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.middleware.csrf import CsrfViewMiddleware
from django.views.csrf import csrf_failure

logger = logging.getLogger("django.security.csrf")

UNSAFE_METHODS = {"POST", "PUT", "PATCH", "DELETE"}


def content_security_policy(*, nonce: str, frame_ancestors: list[str] | None, inline_scripts: bool) -> str:
    """The policy for one response: scripts from this origin or with the nonce, framing as the page allows."""
    # Third-party pages we cannot edit (django-rq's dashboard) use inline scripts without a nonce: only those
    # paths get 'unsafe-inline' (a nonce in the same policy would switch it off).
    scripts = "'self' 'unsafe-inline'" if inline_scripts else f"'self' 'nonce-{nonce}'"
    ancestors = " ".join(["'self'", *frame_ancestors]) if frame_ancestors is not None else "'none'"
    return "; ".join(
        [
            "default-src 'self'",
            f"script-src {scripts}",
            # Inline style blocks and attributes (ours and the admin's) carry no script: allowed.
            "style-src 'self' 'unsafe-inline'",
            "img-src 'self' data:",
            "object-src 'none'",
            f"frame-ancestors {ancestors}",
        ]
    )


class SecurityHeadersMiddleware:
    """CSP with a per-request nonce, no caching of dynamic pages by default, and a multipart body limit."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]):
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        request.csp_nonce = secrets.token_urlsafe(16)
        response = self._too_large(request) or self.get_response(request)
        if "Content-Security-Policy" not in response:
            response["Content-Security-Policy"] = content_security_policy(
                nonce=request.csp_nonce,
                frame_ancestors=getattr(response, "peftlab_frame_ancestors", None),
                inline_scripts=request.path_info.startswith(tuple(settings.PEFTLAB_CSP_INLINE_SCRIPT_PATHS)),
            )
        if "Cache-Control" not in response:
            # Staff pages and exports hold participants' data: never kept by a browser or a proxy.
            response["Cache-Control"] = "private, no-store"
        return response

    @staticmethod
    def _too_large(request: HttpRequest) -> HttpResponse | None:
        """A 413 for a multipart body over PEFTLAB_MAX_MULTIPART_BYTES, before any of it is read."""
        if not request.META.get("CONTENT_TYPE", "").startswith("multipart/"):
            return None
        try:
            length = int(request.META.get("CONTENT_LENGTH") or 0)
        except ValueError:
            length = 0
        limit = settings.PEFTLAB_MAX_MULTIPART_BYTES
        if length <= limit:
            return None
        return HttpResponse(
            f"The request is too large ({length:,} bytes; at most {limit:,}).\n", status=413, content_type="text/plain"
        )


def csp_nonce(request: HttpRequest) -> dict[str, str]:
    """Template context processor: `{{ csp_nonce }}` for inline <script nonce="...">."""
    return {"csp_nonce": getattr(request, "csp_nonce", "")}


def _post_origin_ok(request: HttpRequest) -> bool | None:
    """Whether an unsafe request comes from this site's own pages (None: the browser said nothing either way)."""
    site = request.headers.get("Sec-Fetch-Site")
    if site is not None:
        # "none": the person themselves (reloading a posted page), which no other site can cause.
        return site in ("same-origin", "none")
    origin = request.headers.get("Origin")
    if origin is not None:
        return origin == f"{request.scheme}://{request.get_host()}" or origin in settings.CSRF_TRUSTED_ORIGINS
    return None


def _refused(request: HttpRequest, reason: str) -> HttpResponse:
    logger.warning("Forbidden (%s): %s", reason, request.path, extra={"status_code": 403, "request": request})
    return csrf_failure(request, reason=reason)


def participant_view(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
    """Mark a participant page: framable by PEFTLAB_FRAME_ANCESTORS, posts checked by origin, not cookie."""

    @wraps(view)
    def wrapped(request: HttpRequest, *args, **kwargs) -> HttpResponse:
        if request.method in UNSAFE_METHODS and not getattr(request, "_dont_enforce_csrf_checks", False):
            verdict = _post_origin_ok(request)
            if verdict is False:
                return _refused(request, "the form was posted from another site")
            if verdict is None:
                # A browser that sends neither Sec-Fetch-Site nor Origin: Django's token and cookie check.
                refusal = CsrfViewMiddleware(view).process_view(request, view, args, kwargs)
                if refusal is not None:
                    return refusal
        response = view(request, *args, **kwargs)
        response.xframe_options_exempt = True
        response.peftlab_frame_ancestors = list(settings.PEFTLAB_FRAME_ANCESTORS)
        return response

    wrapped.csrf_exempt = True
    return wrapped
