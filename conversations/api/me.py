"""GET /api/me/: who is logged in, and their balance."""

from __future__ import annotations

from django.http import JsonResponse
from django.views.decorators.http import require_GET


@require_GET
def me(request):
    user = request.user
    account = getattr(user, "credit_account", None)
    return JsonResponse(
        {
            "id": user.pk,
            "username": user.get_username(),
            "is_staff": user.is_staff,
            "balance": str(account.balance) if account is not None else None,
        }
    )
