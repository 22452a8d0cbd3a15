"""The admin site itself: its titles, the URLs of its own pages (the dashboard, adjusting one user's credits), its
log-in and password change through the throttle."""

from __future__ import annotations

from collections.abc import Callable

from django.contrib import admin
from django.contrib.auth.decorators import login_not_required
from django.shortcuts import redirect
from django.urls import path, reverse
from django.utils.translation import gettext_lazy as _

from conversations.admin import credit_adjust, reports, two_factor
from conversations.admin import views as admin_views
from conversations.views.forms import AdminLoginForm, AdminPasswordChangeForm

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
        # Not behind admin_view: a staff user who must enrol first has no admin permission yet (two_factor.py).
        enrol = path("two-factor/", two_factor.two_factor, name="kimichat_two_factor")
        report = path("reports/", admin.site.admin_view(reports.reports_page), name="kimichat_reports")
        return [dashboard, refresh, adjust, enrol, report, *get_urls()]

    return get_urls_with_dashboard


admin.site.get_urls = _with_dashboard(admin.site.get_urls)


# --- Log-in and password change through the throttle -------------------------------------------------------------
# Django's admin login authenticates (so the throttle backend refuses it already); these forms name the refusal.
# Its password change checks the old password with check_password, which no throttle sees: ours authenticates.
admin.site.login_form = AdminLoginForm


def _password_change(request, extra_context=None):
    from conversations.views.accounts import ThrottledPasswordChangeView

    request.current_app = admin.site.name
    return ThrottledPasswordChangeView.as_view(
        form_class=AdminPasswordChangeForm,
        success_url=reverse("admin:password_change_done", current_app=admin.site.name),
        extra_context={**admin.site.each_context(request), **(extra_context or {})},
    )(request)


admin.site.password_change = _password_change


# --- The second factor (conversations/admin/two_factor.py) --------------------------------------------------------
_has_permission = admin.site.has_permission
_login = admin.site.login


def _has_permission_with_second_factor(request):
    return _has_permission(request) and two_factor.second_factor_ok(request)


@login_not_required  # as Django's own admin login
def _login_or_enrol(request, extra_context=None):
    # A staff session that must enrol before the admin opens goes to the enrolment page, not to a log-in form that
    # would only say "not authorized".
    if request.user.is_authenticated and request.user.is_staff and two_factor.needs_enrolment(request.user):
        return redirect("admin:kimichat_two_factor")
    return _login(request, extra_context)


admin.site.has_permission = _has_permission_with_second_factor
admin.site.login = _login_or_enrol
