"""Admin pages that are not a model's changelist: the operators' dashboard (mounted at /admin/dashboard/)."""

from __future__ import annotations

from asgiref.sync import async_to_sync
from django.conf import settings
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.shortcuts import redirect
from django.template.response import TemplateResponse
from django.utils.translation import gettext as _
from django.views.decorators.http import require_POST

from conversations.admin import dashboard as admin_dashboard
from conversations.services.billing import provider_balance
from conversations.services.billing.credit_format import format_credits

# The dashboard shows usage and spending per user (no message content): the ledger's view permission is the key.
DASHBOARD_PERMISSION = "conversations.view_credittransaction"


def can_view_dashboard(user) -> bool:
    return user.is_active and user.is_staff and user.has_perm(DASHBOARD_PERMISSION)


def dashboard(request):
    """Wrapped in ``admin.site.admin_view`` (staff login) by conversations.admin.site; also needs
    DASHBOARD_PERMISSION."""
    if not can_view_dashboard(request.user):
        raise PermissionDenied
    data = admin_dashboard.dashboard_data()
    charts = [
        admin_dashboard.bar_chart(data.days, "requests", title=_("Requests per day")),
        admin_dashboard.bar_chart(data.days, "tokens", title=_("Tokens per day")),
        admin_dashboard.bar_chart(data.days, "credits", title=_("Credits spent per day")),
    ]
    user = request.user
    context = {
        **admin.site.each_context(request),
        "title": _("KimiChat dashboard"),
        "data": data,
        "charts": charts,
        "provider_balance": format_credits(data.provider_balance.balance) if data.provider_balance else None,
        "provider_alert_below": (
            settings.KIMICHAT_PROVIDER_BALANCE_ALERT_BELOW
            if data.provider_balance and provider_balance.below_alert_level(data.provider_balance.balance)
            else None
        ),
        # Links to rows are shown only to those who may open them (message content is behind its permission).
        "can_view_messages": user.has_perm("conversations.view_message"),
        "can_view_conversations": user.has_perm("conversations.view_conversation"),
        "can_view_users": user.has_perm("auth.view_user") or user.has_perm("auth.change_user"),
    }
    return TemplateResponse(request, "admin/kimichat_dashboard.html", context)


@require_POST
def refresh_provider_balance(request):
    """The dashboard's "refresh" button: read the provider balance now (a new snapshot), then back to the page."""
    if not can_view_dashboard(request.user):
        raise PermissionDenied
    snapshot = async_to_sync(provider_balance.refresh_provider_balance)()
    if snapshot is not None and snapshot.balance is not None:
        messages.success(
            request, _("Provider balance read: %(balance)s.") % {"balance": format_credits(snapshot.balance)}
        )
    else:
        messages.warning(request, _("The provider did not report a balance (its balance endpoint did not answer)."))
    return redirect("admin:kimichat_dashboard")
