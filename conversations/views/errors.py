"""Error pages: JSON for the API under /api/ (its clients parse every answer as JSON), HTML pages elsewhere (ours
for 404: templates/404.html, shown under DEBUG too by kimichat.middleware.NotFoundPageMiddleware).

Wired in kimichat/settings.py (``CSRF_FAILURE_VIEW``) and kimichat/urls.py (``handler400`` … ``handler500``).
"""

from __future__ import annotations

from django.core.exceptions import RequestDataTooBig, TooManyFieldsSent
from django.http import JsonResponse
from django.views import defaults
from django.views.csrf import csrf_failure as django_csrf_failure


def _is_api(request) -> bool:
    return request.path.startswith("/api/")


def _error(code: str, message: str, status: int) -> JsonResponse:
    return JsonResponse({"error": {"code": code, "message": message}}, status=status)


def csrf_failure(request, reason: str = "", template_name: str = "403_csrf.html"):
    if _is_api(request):
        # The reason names the missing piece (cookie, token, origin) without echoing any of their values.
        return _error(
            "csrf_failed", f"CSRF check failed: {reason} Send the csrftoken cookie's value in X-CSRFToken.", 403
        )
    return django_csrf_failure(request, reason=reason, template_name=template_name)


def bad_request(request, exception=None):
    """A request Django could not read (a broken multipart body, one over DATA_UPLOAD_MAX_MEMORY_SIZE, …)."""
    if _is_api(request):
        if isinstance(exception, RequestDataTooBig):
            return _error("too_large", "The request body is too large.", 413)
        if isinstance(exception, TooManyFieldsSent):
            return _error("bad_request", "The request has too many fields.", 400)
        return _error("bad_request", "The request could not be read.", 400)
    return defaults.bad_request(request, exception)


def permission_denied(request, exception=None):
    if _is_api(request):
        return _error("forbidden", "You may not do this.", 403)
    return defaults.permission_denied(request, exception)


def page_not_found(request, exception=None):
    if _is_api(request):
        return _error("not_found", "There is nothing at this address.", 404)
    return defaults.page_not_found(request, exception)


def server_error(request):
    if _is_api(request):
        # Nothing about the failure itself: it is logged with the request id, which the response carries.
        return _error("server_error", "Something went wrong on our side.", 500)
    return defaults.server_error(request)
