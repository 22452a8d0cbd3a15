"""Invite codes: made by staff (admin) or by users (their invites page), redeemed at sign-up.

A code is redeemed inside the sign-up's transaction, under a row lock (``select_for_update``; on SQLite the
IMMEDIATE transactions serialize writers instead), so concurrent sign-ups with one code never pass ``max_uses`` —
the database's check constraint backs this up — and each sign-up rewards the inviter exactly once, with one ledger
row (``credits.reward_inviter``), in the same transaction as the account it pays for.
"""

from __future__ import annotations

import re
from datetime import timedelta

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import IntegrityError, transaction
from django.db.models import Q
from django.utils import timezone
from django.utils.translation import gettext as _
from django.utils.translation import ngettext

from conversations.models import InviteCode

CODE_RE = re.compile(r"[^A-Z0-9]")


class InviteRefused(Exception):
    """A code that cannot be used. ``code``: unknown, expired, used_up (the words shown say which)."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code, self.message = code, message


def normalize(code: str) -> str:
    """What people type, as stored: upper case, without spaces or dashes."""
    return CODE_RE.sub("", (code or "").upper())[:32]


def for_redeeming(code: str) -> InviteCode:
    """The code's row, locked until the surrounding transaction ends, or InviteRefused. Must run inside atomic."""
    normalized = normalize(code)
    invite = (
        InviteCode.objects.select_for_update(of=("self",)).select_related("inviter").filter(code=normalized).first()
        if normalized
        else None
    )
    # A revoked code, or one of a deactivated user, is "unknown": nothing to tell a stranger about it.
    if invite is None or invite.revoked_at is not None or (invite.inviter and not invite.inviter.is_active):
        raise InviteRefused("unknown", _("This invite code is not valid. Check it, or ask for a new one."))
    if invite.expired:
        raise InviteRefused("expired", _("This invite code has expired. Ask for a new one."))
    if invite.uses >= invite.max_uses:
        raise InviteRefused("used_up", _("This invite code has been used up. Ask for a new one."))
    return invite


def redeem(invite: InviteCode) -> None:
    """Count one use of a locked, usable code."""
    invite.uses += 1
    invite.save(update_fields=["uses"])


class InviteLimit(Exception):
    pass


def invites_left(user) -> int:
    """Sign-ups the user's codes may still bring: INVITES_PER_USER minus what their codes hold (the uses of a
    revoked or expired code; the whole ``max_uses`` of one still open)."""
    now = timezone.now()
    held = 0
    for invite in InviteCode.objects.filter(inviter=user).only("uses", "max_uses", "revoked_at", "expires_at"):
        closed = invite.revoked_at is not None or (invite.expires_at is not None and invite.expires_at <= now)
        held += invite.uses if closed else invite.max_uses
    return max(0, settings.KIMICHAT_INVITES_PER_USER - held)


def create_for_user(user, *, max_uses: int, note: str = "") -> InviteCode:
    """A user's own code (they are its inviter), lasting INVITE_DAYS; InviteLimit past INVITES_PER_USER."""
    with transaction.atomic():
        # The user's row, locked: two tabs cannot both spend the last invitations.
        get_user_model().objects.select_for_update().filter(pk=user.pk).first()
        left = invites_left(user)
        if max_uses < 1 or max_uses > left:
            raise InviteLimit(
                ngettext("You can invite %(left)d more person.", "You can invite %(left)d more people.", left)
                % {"left": left}
                if left
                else _("You have no invitations left.")
            )
        return _create(
            inviter=user,
            created_by=user,
            max_uses=max_uses,
            note=note[:200],
            expires_at=timezone.now() + timedelta(days=settings.KIMICHAT_INVITE_DAYS),
        )


def _create(**fields) -> InviteCode:
    for _attempt in range(5):  # 60 random bits: a clash is all but impossible, but never a 500 for one
        try:
            with transaction.atomic():
                return InviteCode.objects.create(code=InviteCode.new_code(), **fields)
        except IntegrityError:
            continue
    raise RuntimeError("could not make a unique invite code")


def create(**fields) -> InviteCode:
    """A code made by staff (``inviter`` may be None: nobody is rewarded)."""
    return _create(**fields)


def revoke(user, invite_id: int) -> bool:
    """The user revokes one of their own codes; False when it is not theirs (or already revoked)."""
    return bool(
        InviteCode.objects.filter(pk=invite_id, inviter=user, revoked_at__isnull=True).update(revoked_at=timezone.now())
    )


def open_codes(queryset):
    now = timezone.now()
    return queryset.filter(Q(expires_at__isnull=True) | Q(expires_at__gt=now), revoked_at__isnull=True)
