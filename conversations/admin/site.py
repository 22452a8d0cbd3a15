"""The admin site itself: its titles, and the URLs of its own pages (the dashboard, adjusting one user's credits)."""

from __future__ import annotations

from collections.abc import Callable

from django.contrib import admin
from django.urls import path
from django.utils.translation import gettext_lazy as _

from conversations.admin import credit_adjust
from conversations.admin import views as admin_views

admin.site.site_header = _("KimiChat administration")
admin.site.site_title = _("KimiChat admin")


# --- The dashboard's URL ---------------------------------------------------------------------------------------
# The project uses the default AdminSite; its URLs gain /admin/dashboard/ here rather than through a custom site
# class (which would need an AdminConfig swap in INSTALLED_APPS). admin_view() adds the staff login check.
def _with_dashboard(get_urls: Callable[[], list]) -> Callable[[], list]:
    def get_urls_with_dashboard() -> list:
        dashboard = path("dashboard/", admin.site.admin_view(admin_views.dashboard), name="kimichat_dashboard")
        adjust = path(
            "credits/adjust/<int:user_id>/",
            admin.site.admin_view(credit_adjust.adjust_user_credits),
            name="kimichat_adjust_credits",
        )
        refresh = path(
            "dashboard/provider-balance/",
            admin.site.admin_view(admin_views.refresh_provider_balance),
            name="kimichat_refresh_provider_balance",
        )
        return [dashboard, refresh, adjust, *get_urls()]

    return get_urls_with_dashboard


admin.site.get_urls = _with_dashboard(admin.site.get_urls)
