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

from conversations.models import AccountSignup
from conversations.services.accounts import invites, signup_modes


@transaction.atomic
def create_account(username: str, password: str, email: str = "", *, mode: str = "open", invite_code: str = ""):
    """Create a user by the sign-up page's rules for ``mode`` (services/accounts/signup_modes.py); returns
    ``(user, became_superuser)``. In invite mode ``invite_code`` is redeemed first (InviteRefused: nothing is
    written) and its inviter rewarded; in approval mode the account waits and gets its credits when approved.

    "First" means the lowest id: if two people sign up at the same moment on an empty install, only the one whose
    row came first is promoted, because each checks for any *earlier* user rather than for "no other user".
    """
    from conversations.services.billing import credits

    row = signup_modes.site_settings()
    invite = invites.for_redeeming(invite_code) if mode == signup_modes.Mode.INVITE else None
    if invite is not None:
        invites.redeem(invite)
    User = get_user_model()
    user = User(username=User.normalize_username(username), email=User.objects.normalize_email(email))
    user.set_password(password)
    # Read by the post_save handler that opens the credit account (conversations/signals.py).
    user.signup_credits = 0 if mode == signup_modes.Mode.APPROVAL else signup_modes.signup_credits(mode, row)
    user.save()
    is_first = settings.DEBUG and not User.objects.filter(pk__lt=user.pk).exists()
    if is_first:
        user.is_staff = True
        user.is_superuser = True
        user.save(update_fields=["is_staff", "is_superuser"])
    AccountSignup.objects.create(
        user=user, mode=mode, invite=invite, awaiting_approval=mode == signup_modes.Mode.APPROVAL and not is_first
    )
    reward = signup_modes.invite_reward(row)
    if invite is not None and invite.inviter is not None and reward > 0:
        credits.reward_inviter(invite.inviter, reward, note=f"Invite reward: a sign-up with code {invite.code}")
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
