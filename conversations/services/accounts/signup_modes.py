"""Who may sign up, and what a new account starts with.

The mode is ``open`` (anyone), ``invite`` (with an invite code, ``invites.py``), ``approval`` (anyone, but the account
waits for staff before it can chat, ``approval.py``) or ``closed``. The environment gives the default
(``SIGNUP_MODE``; ``SIGNUP_ENABLED=false`` is ``closed``); staff override it, and the credits of each mode, at run
time in the admin's "Sign-up settings" (the one ``SignupSettings`` row). Read from the database at every use, so a
change reaches every worker at once.
"""

from __future__ import annotations

from decimal import Decimal

from django.conf import settings

from conversations.models import SignupMode, SignupSettings

Mode = SignupMode


def site_settings() -> SignupSettings:
    """The settings row, unsaved (all empty: the environment decides) when staff never saved one."""
    return SignupSettings.objects.filter(pk=1).first() or SignupSettings(pk=1)


def environment_mode() -> str:
    return settings.KIMICHAT_SIGNUP_MODE if settings.KIMICHAT_SIGNUP_ENABLED else Mode.CLOSED


def current_mode(row: SignupSettings | None = None) -> str:
    row = row if row is not None else site_settings()
    return row.mode or environment_mode()


def signup_credits(mode: str, row: SignupSettings | None = None) -> Decimal:
    """Credits a new account of ``mode`` gets (in approval mode: when approved)."""
    row = row if row is not None else site_settings()
    override = {Mode.OPEN: row.credits_open, Mode.INVITE: row.credits_invite, Mode.APPROVAL: row.credits_approval}
    value = override.get(mode)
    return Decimal(settings.KIMICHAT_SIGNUP_CREDITS) if value is None else value


def invite_reward(row: SignupSettings | None = None) -> Decimal:
    row = row if row is not None else site_settings()
    value = row.invite_reward
    return Decimal(settings.KIMICHAT_INVITE_REWARD_CREDITS) if value is None else value
