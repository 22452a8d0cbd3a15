"""Approval mode: an account made by the sign-up page waits until staff approve it. It can log in and look
around, but the chat socket refuses its sends and the /v1/ API its requests (``is_waiting``). Approving grants the
approval mode's sign-up credits, once."""

from __future__ import annotations

from django.db import transaction
from django.utils import timezone
from django.utils.translation import gettext as _

from conversations.models import AccountSignup
from conversations.services.accounts import signup_modes

WAITING_CODE = "awaiting_approval"


def waiting_message() -> str:
    return _("Your account is waiting for approval by an administrator. You can chat once it is approved.")


def is_waiting(user_id: int) -> bool:
    return AccountSignup.objects.filter(user_id=user_id, awaiting_approval=True).exists()


def waiting_among(user_ids) -> set[int]:
    """Which of ``user_ids`` wait for approval (``is_waiting`` for many, one query)."""
    rows = AccountSignup.objects.filter(user_id__in=list(user_ids), awaiting_approval=True)
    return set(rows.values_list("user_id", flat=True))


def approve(user_ids, *, by) -> int:
    """Approve the waiting accounts among ``user_ids``; returns how many were waiting. Each is approved and credited
    once, however many staff click at the same moment (row lock, then the flag is re-read)."""
    from conversations.services.billing import credits

    approved = 0
    amount = signup_modes.signup_credits(signup_modes.Mode.APPROVAL)
    for user_id in user_ids:
        with transaction.atomic():
            signup = (
                AccountSignup.objects.select_for_update(of=("self",))
                .select_related("user")
                .filter(user_id=user_id, awaiting_approval=True)
                .first()
            )
            if signup is None:
                continue
            signup.awaiting_approval = False
            signup.approved_at = timezone.now()
            signup.approved_by = by
            signup.save(update_fields=["awaiting_approval", "approved_at", "approved_by"])
            if amount > 0:
                credits.welcome(signup.user, amount, note="Welcome credits (account approved)")
            approved += 1
    return approved
