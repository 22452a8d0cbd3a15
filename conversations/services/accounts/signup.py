"""Creating accounts, and the operator's first superuser.

In production (``DEBUG=false``) nobody becomes a superuser by signing up: on a fresh install the first visitor would
otherwise own the server. The operator's superuser comes from ``createsuperuser`` or from ``ensure_admin`` (the
``ensureadmin`` command of the documented start-up, docs/deployment.md). In DEBUG the first account is still made
the superuser, as a convenience of a developer's own machine.
"""

from __future__ import annotations

from dataclasses import dataclass

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.password_validation import validate_password
from django.db import transaction


@transaction.atomic
def create_account(username: str, password: str, email: str = ""):
    """Create a user; returns ``(user, became_superuser)``.

    "First" means the lowest id: if two people sign up at the same moment on an empty install, only the one whose
    row came first is promoted, because each checks for any *earlier* user rather than for "no other user".
    """
    User = get_user_model()
    user = User.objects.create_user(username=username, password=password, email=email)
    is_first = settings.DEBUG and not User.objects.filter(pk__lt=user.pk).exists()
    if is_first:
        user.is_staff = True
        user.is_superuser = True
        user.save(update_fields=["is_staff", "is_superuser"])
    return user, is_first


@dataclass(frozen=True)
class EnsureAdminResult:
    created: bool
    reason: str  # what was done, or why nothing was


@transaction.atomic
def ensure_admin(username: str, password: str | None, email: str = "") -> EnsureAdminResult:
    """Create the superuser ``username`` unless the install already has a superuser (then nothing changes, so this
    runs at every start). The password must pass the password validators."""
    User = get_user_model()
    if User.objects.filter(is_superuser=True).exists():
        return EnsureAdminResult(False, "a superuser exists already; nothing changed")
    if not username:
        return EnsureAdminResult(False, "ADMIN_USERNAME is not set; no superuser was created")
    if not password:
        raise ValueError("ADMIN_PASSWORD_FILE (or ADMIN_PASSWORD) must be set with ADMIN_USERNAME")
    if User.objects.filter(**{User.USERNAME_FIELD: username}).exists():
        raise ValueError(f"a user named {username!r} exists and is not a superuser; promote them in the admin")
    user = User(**{User.USERNAME_FIELD: username}, email=email)
    validate_password(password, user)
    User.objects.create_superuser(username=username, email=email, password=password)
    return EnsureAdminResult(True, f"superuser {username!r} created")
