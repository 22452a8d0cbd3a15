"""The log-in throttle at the authentication layer, so every caller of ``django.contrib.auth.authenticate`` — the
login page, the admin's login, the password-change forms' old password, any later API-key or token check — is
refused the same way, before a password is looked at.

``LoginThrottleBackend`` comes first in ``AUTHENTICATION_BACKENDS``: it only says "stop" (PermissionDenied, which
ends ``authenticate`` at once) or "go on" (None, ModelBackend checks the password). Failures are counted from the
``user_login_failed`` signal and successes cleared from ``user_logged_in`` (``conversations/signals.py``).
"""

from __future__ import annotations

import math

from django.contrib.auth import get_user_model
from django.contrib.auth.backends import BaseBackend, ModelBackend
from django.core.exceptions import PermissionDenied
from django.utils.translation import ngettext

from conversations.services.accounts import login_throttle
from conversations.services.accounts.client_address import request_client_address

THROTTLED_ATTRIBUTE = "login_throttled"  # set on the request a throttled attempt came with, for the views' answer


def _username(credentials: dict) -> str:
    username = credentials.get("username") or credentials.get(get_user_model().USERNAME_FIELD) or ""
    return username if isinstance(username, str) else ""


class LoginThrottleBackend(BaseBackend):
    def authenticate(self, request, **credentials):
        throttled = login_throttle.check(_username(credentials), request_client_address(request))
        if throttled is None:
            return None  # the next backend checks the credentials
        if request is not None:
            setattr(request, THROTTLED_ATTRIBUTE, throttled)
        raise PermissionDenied

    def get_user(self, user_id):
        # A session names the backend it was made with; force_login and login() without one pick the first backend,
        # this one: its sessions resolve to users as ModelBackend's do (inactive users included out).
        return ModelBackend().get_user(user_id)


def throttled(request) -> login_throttle.Throttled | None:
    return getattr(request, THROTTLED_ATTRIBUTE, None)


def throttled_message(throttled: login_throttle.Throttled) -> str:
    minutes = max(1, math.ceil(throttled.retry_after / 60))
    # The same words for an account and an address: saying which would tell a guesser the account exists.
    return ngettext(
        "Too many failed log-in attempts. Try again in %(minutes)d minute.",
        "Too many failed log-in attempts. Try again in %(minutes)d minutes.",
        minutes,
    ) % {"minutes": minutes}


def record_failure(credentials: dict, request) -> None:
    """A failed ``authenticate``: counted, unless the throttle itself refused it (its window is already running)."""
    username = _username(credentials)
    if throttled(request) is None and (username or request is not None):
        login_throttle.record_failure(username, request_client_address(request))


def record_success(user, request) -> None:
    login_throttle.record_success(user.get_username(), request_client_address(request))
