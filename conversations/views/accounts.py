"""Sign up (switchable) and a throttled log-in. Log out and password change are Django's own views."""

import math

from django.conf import settings
from django.contrib import messages
from django.contrib.auth import get_user_model, login
from django.contrib.auth import views as auth_views
from django.contrib.auth.decorators import login_not_required
from django.http import Http404
from django.shortcuts import redirect, render
from django.utils.translation import gettext as _
from django.utils.translation import ngettext

from conversations.services.accounts import login_throttle
from conversations.services.accounts.signup import create_account
from conversations.views.forms import SignupForm


class ThrottledLoginView(auth_views.LoginView):
    """Django's LoginView, refusing with 429 once an account or address has failed too often (login_throttle)."""

    redirect_authenticated_user = True

    def _attempt(self) -> tuple[str, str]:
        username = self.request.POST.get("username", "")[:300]  # a username field holds at most 150 characters
        return username, self.request.META.get("REMOTE_ADDR", "")

    def post(self, request, *args, **kwargs):
        username, ip = self._attempt()
        throttled = login_throttle.check(username, ip)
        if throttled is None:
            return super().post(request, *args, **kwargs)
        # Unbound: a bound form would check the password while validating, which is the very thing refused here.
        form = self.get_form_class()(request, initial={"username": username})
        minutes = max(1, math.ceil(throttled.retry_after / 60))
        # The same words for an account and an address: saying which would tell a guesser the account exists.
        message = ngettext(
            "Too many failed log-in attempts. Try again in %(minutes)d minute.",
            "Too many failed log-in attempts. Try again in %(minutes)d minutes.",
            minutes,
        ) % {"minutes": minutes}
        response = self.render_to_response(self.get_context_data(form=form, throttled=message), status=429)
        response["Retry-After"] = str(throttled.retry_after)
        return response

    def form_invalid(self, form):
        username, ip = self._attempt()
        if username:  # a blank form is a typo, not a guess
            login_throttle.record_failure(username, ip)
        return super().form_invalid(form)

    def form_valid(self, form):
        login_throttle.record_success(self._attempt()[0])
        return super().form_valid(form)


@login_not_required
def signup(request):
    if not settings.KIMICHAT_SIGNUP_ENABLED:
        raise Http404("Sign-up is switched off on this server.")
    if request.user.is_authenticated:
        return redirect("chat")
    empty_install = not get_user_model().objects.exists()
    form = SignupForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        user, became_superuser = create_account(
            form.cleaned_data["username"], form.cleaned_data["password1"], form.cleaned_data.get("email", "")
        )
        login(request, user, backend="django.contrib.auth.backends.ModelBackend")
        if became_superuser:
            messages.info(request, _("You are the first user, so your account is the administrator (superuser)."))
        return redirect("chat")
    return render(request, "registration/signup.html", {"form": form, "empty_install": empty_install})
