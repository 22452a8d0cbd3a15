"""Sign up (switchable, throttled per address), log-in and password change. The throttle itself sits in the
authentication layer (``services/accounts/backends.py``); these views only turn its refusal into a 429."""

import math

from django.contrib import messages
from django.contrib.auth import login
from django.contrib.auth import views as auth_views
from django.contrib.auth.decorators import login_not_required
from django.db import transaction
from django.http import Http404
from django.shortcuts import redirect, render
from django.utils.translation import gettext as _
from django.utils.translation import ngettext

from conversations.services.accounts import backends, invites, login_throttle, sessions, signup_modes
from conversations.services.accounts.client_address import request_client_address
from conversations.services.accounts.signup import create_account
from conversations.views.forms import (
    LoginForm,
    ResetSetPasswordForm,
    SignupForm,
    ThrottledPasswordChangeForm,
    ThrottledPasswordResetForm,
)


class ThrottledLoginView(auth_views.LoginView):
    """Django's LoginView; an attempt the throttle refused gets 429 with Retry-After."""

    authentication_form = LoginForm
    redirect_authenticated_user = True

    def form_invalid(self, form):
        response = super().form_invalid(form)
        refused = backends.throttled(self.request)
        if refused is not None:
            response.status_code = 429
            response["Retry-After"] = str(refused.retry_after)
        return response


class ThrottledPasswordChangeView(auth_views.PasswordChangeView):
    """The old password is checked through ``authenticate``, so the log-in throttle covers it."""

    form_class = ThrottledPasswordChangeForm

    def get_form_kwargs(self):
        return {**super().get_form_kwargs(), "request": self.request}

    def form_valid(self, form):
        # One transaction: the user's sockets re-check (on commit) only after this session moved to its new key and
        # hash, and this session's sockets are told the new key first; the other sessions' sockets close.
        with transaction.atomic():
            old_key = self.request.session.session_key
            response = super().form_valid(form)
            self.request.session.save()  # the new hash, now: the middleware would store it only after the commit
            sessions.follow_new_session_key(old_key, self.request.session.session_key)
        return response


def _throttled_response(request, template: str, context: dict, refused: login_throttle.Throttled, what: str):
    minutes = max(1, math.ceil(refused.retry_after / 60))
    if what == "signup":
        message = ngettext(
            "Too many sign-up attempts from your address. Try again in %(minutes)d minute.",
            "Too many sign-up attempts from your address. Try again in %(minutes)d minutes.",
            minutes,
        ) % {"minutes": minutes}
    else:
        message = ngettext(
            "Too many password reset requests from your address. Try again in %(minutes)d minute.",
            "Too many password reset requests from your address. Try again in %(minutes)d minutes.",
            minutes,
        ) % {"minutes": minutes}
    response = render(request, template, {**context, "throttled": message}, status=429)
    response["Retry-After"] = str(refused.retry_after)
    return response


class ThrottledPasswordResetView(auth_views.PasswordResetView):
    """Django's reset by e-mail: the same page whether the address has an account or not; requests are limited per
    client address (429) and mails per e-mail address (silently)."""

    form_class = ThrottledPasswordResetForm
    email_template_name = "registration/password_reset_email.txt"
    subject_template_name = "registration/password_reset_subject.txt"

    def post(self, request, *args, **kwargs):
        ip = request_client_address(request)
        refused = login_throttle.check_password_reset(ip)
        if refused is not None:
            context = self.get_context_data(form=self.form_class())
            return _throttled_response(request, self.template_name, context, refused, "reset")
        login_throttle.record_password_reset(ip)
        return super().post(request, *args, **kwargs)


class ResetPasswordConfirmView(auth_views.PasswordResetConfirmView):
    """The link from the mail (single use: the token is bound to the password it replaces). Saving the new password
    ends the user's other sessions and sockets (their auth hash no longer matches; the post_save handler tells the
    sockets), and lifts the log-in throttle's locks on the account: its owner proved who they are."""

    form_class = ResetSetPasswordForm

    def form_valid(self, form):
        response = super().form_valid(form)
        login_throttle.unlock(form.user.get_username())
        return response


@login_not_required
def signup(request):
    mode = signup_modes.current_mode()
    if mode == signup_modes.Mode.CLOSED:
        raise Http404("Sign-up is switched off on this server.")
    if request.user.is_authenticated:
        return redirect("chat")
    invite_required = mode == signup_modes.Mode.INVITE
    initial = {"invite_code": request.GET.get("invite", "")[:64]} if invite_required else None
    form = SignupForm(request.POST or None, initial=initial, invite_required=invite_required)
    context = {"form": form, "mode": mode}
    if request.method == "POST":
        ip = request_client_address(request)
        refused = login_throttle.check_signup(ip)
        if refused is not None:
            context = {**context, "form": SignupForm(invite_required=invite_required)}
            return _throttled_response(request, "registration/signup.html", context, refused, "signup")
        login_throttle.record_signup(ip)
        if form.is_valid():
            try:
                user, became_superuser = create_account(
                    form.cleaned_data["username"],
                    form.cleaned_data["password1"],
                    form.cleaned_data.get("email", ""),
                    mode=mode,
                    invite_code=form.cleaned_data.get("invite_code", ""),
                )
            except invites.InviteRefused as exc:
                form.add_error("invite_code", exc.message)
            else:
                login(request, user, backend="django.contrib.auth.backends.ModelBackend")
                if became_superuser:  # told to the new account only, once signed in; never on the public page
                    messages.info(
                        request, _("You are the first user, so your account is the administrator (superuser).")
                    )
                return redirect("chat")
    return render(request, "registration/signup.html", context)
