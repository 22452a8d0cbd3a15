"""KimiChat's middleware: each a ``MiddlewareMixin`` of ``process_*`` methods, so that one class serves both chains
(kimichat/request_threads.py: pages run them synchronously, the API on the event loop)."""

from django.contrib.auth.middleware import LoginRequiredMiddleware as DjangoLoginRequiredMiddleware
from django.http import JsonResponse
from django.utils.deprecation import MiddlewareMixin


class LoginRequiredMiddleware(DjangoLoginRequiredMiddleware):
    """Every page needs a login (views opt out with ``@login_not_required``); the JSON API answers 401."""

    def handle_no_permission(self, request, view_func):
        if request.path.startswith("/api/"):
            return JsonResponse(
                {"error": {"code": "not_authenticated", "message": "Log in to use the API."}}, status=401
            )
        return super().handle_no_permission(request, view_func)


class RequestIdMiddleware(MiddlewareMixin):
    """Tags every log line of a request with its id, and returns the id in ``X-Request-ID``. (Each middleware below
    turns an exception into a response, so ``process_response`` always follows ``process_request``.)"""

    def process_request(self, request):
        from kimichat.logs import new_request_id, request_id_var

        request.request_id = new_request_id(request.headers.get("X-Request-ID"))
        request._request_id_token = request_id_var.set(request.request_id)

    def process_response(self, request, response):
        from kimichat.logs import request_id_var

        token = getattr(request, "_request_id_token", None)
        if token is not None:
            del request._request_id_token
            request_id_var.reset(token)
        response["X-Request-ID"] = request.request_id
        return response


class ContentSecurityPolicyMiddleware(MiddlewareMixin):
    """Only our own scripts and styles, nothing from elsewhere, no plugins or frames (settings.KIMICHAT_CSP).

    Django's admin sets a few inline style attributes, so its pages get 'unsafe-inline' styles; scripts stay ours
    everywhere. A sanitizer bug in the chat page therefore cannot run injected script even if it let one through.
    """

    def __init__(self, get_response):
        from django.conf import settings

        super().__init__(get_response)
        self.policy = settings.KIMICHAT_CSP
        self.admin_policy = self.policy.replace("style-src 'self'", "style-src 'self' 'unsafe-inline'")

    def process_response(self, request, response):
        if "Content-Security-Policy" not in response:
            admin = request.path.startswith("/admin/")
            response["Content-Security-Policy"] = self.admin_policy if admin else self.policy
        return response


class ApiMethodNotAllowedMiddleware(MiddlewareMixin):
    """Django's ``require_GET``/``require_POST`` answer 405 with an empty body; the API answers JSON (docs/api.md)."""

    def process_response(self, request, response):
        if (
            response.status_code == 405
            and request.path.startswith("/api/")
            and not response.get("Content-Type", "").startswith("application/json")
        ):
            allowed = response.get("Allow", "")
            response = JsonResponse(
                {"error": {"code": "method_not_allowed", "message": f"{request.method} is not allowed here."}},
                status=405,
            )
            response["Allow"] = allowed
        return response


class NotFoundPageMiddleware(MiddlewareMixin):
    """A view's 404 (a missing chat, another user's, a revoked share link) gets the app's own page, also under DEBUG.

    Django answers ``Http404`` with ``handler404`` only when DEBUG is off; with DEBUG on (``make run``) it shows its
    technical page, which lists the URL patterns and reads as a crash to a person. A view's 404 is an ordinary
    answer, not a bug to debug. An address that matches no URL pattern still gets Django's page under DEBUG.
    """

    def process_exception(self, request, exception):
        from django.http import Http404

        from conversations.views import errors

        if isinstance(exception, Http404):
            return errors.page_not_found(request, exception)
        return None
