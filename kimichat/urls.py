from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.contrib.auth.decorators import login_not_required
from django.templatetags.static import static
from django.urls import include, path
from django.views.generic import RedirectView
from django.views.i18n import JavaScriptCatalog

from conversations.views import accounts, errors, health

# JSON for /api/ paths, Django's pages elsewhere (used when DEBUG is false).
handler400 = errors.bad_request
handler403 = errors.permission_denied
handler404 = errors.page_not_found
handler500 = errors.server_error


class FaviconView(RedirectView):
    """``/favicon.ico``, which browsers ask for on pages that name no icon: our SVG (looked up per request, so the
    hashed name of the manifest storage is read once collectstatic has run)."""

    def get_redirect_url(self, *args, **kwargs):
        return static("img/favicon.svg")


urlpatterns = [
    path("favicon.ico", login_not_required(FaviconView.as_view())),
    path("healthz", health.healthz, name="healthz"),
    path("readyz", health.readyz, name="readyz"),
    path("admin/", admin.site.urls),
    # The log-in throttle sits in the authentication layer (conversations.services.accounts.backends): these, the
    # admin's login and both password-change forms go through it.
    path("accounts/login/", accounts.ThrottledLoginView.as_view(), name="login"),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("accounts/signup/", accounts.signup, name="signup"),
    path("accounts/password/", accounts.ThrottledPasswordChangeView.as_view(), name="password_change"),
    path("accounts/password/done/", auth_views.PasswordChangeDoneView.as_view(), name="password_change_done"),
    path("accounts/password/reset/", accounts.ThrottledPasswordResetView.as_view(), name="password_reset"),
    path("accounts/password/reset/sent/", auth_views.PasswordResetDoneView.as_view(), name="password_reset_done"),
    path(
        "accounts/reset/<uidb64>/<token>/",
        accounts.ResetPasswordConfirmView.as_view(),
        name="password_reset_confirm",
    ),
    path("accounts/reset/done/", auth_views.PasswordResetCompleteView.as_view(), name="password_reset_complete"),
    path("i18n/", include("django.conf.urls.i18n")),
    # The JS strings of the chat page, in the request's language (gettext() and friends for static/js).
    path("jsi18n/", login_not_required(JavaScriptCatalog.as_view()), name="javascript-catalog"),
    path("api/", include("conversations.api.urls")),
    # KimiChat's own API for scripts (OpenAI/Anthropic-compatible), authenticated by personal API keys only.
    path("v1/", include("conversations.api_v1.urls")),
    path("", include("conversations.urls")),
]
