from django.contrib.auth.middleware import LoginRequiredMiddleware as DjangoLoginRequiredMiddleware
from django.http import JsonResponse


class LoginRequiredMiddleware(DjangoLoginRequiredMiddleware):
    """Every page needs a login (views opt out with ``@login_not_required``); the JSON API answers 401."""

    def handle_no_permission(self, request, view_func):
        if request.path.startswith("/api/"):
            return JsonResponse(
                {"error": {"code": "not_authenticated", "message": "Log in to use the API."}}, status=401
            )
        return super().handle_no_permission(request, view_func)
