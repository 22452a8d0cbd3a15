"""Invite codes under real concurrency on PostgreSQL: many sign-ups with one code at the same moment never pass its
uses, and each accepted sign-up rewards the inviter exactly once. Runs in the PostgreSQL pass (skipped on SQLite)."""

from __future__ import annotations

import threading
from decimal import Decimal

import pytest
from django.contrib.auth import get_user_model
from django.db import connection, connections

from conversations.models import AccountSignup, CreditTransaction, InviteCode
from conversations.services.accounts import invites
from conversations.services.accounts.signup import create_account
from conversations.services.billing import credits
from tests.conftest import PASSWORD

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(connection.vendor != "postgresql", reason="needs PostgreSQL (set DATABASE_URL=postgres://...)"),
]
THREADS = 12


def sign_up_at_once(code: str, count: int) -> tuple[list[str], list[str]]:
    """``count`` threads, each with its own connection, released together, each signing up with ``code``."""
    barrier = threading.Barrier(count)
    accepted, refused = [], []

    def one(n: int) -> None:
        try:
            barrier.wait(timeout=10)
            create_account(f"racer{n}", PASSWORD, mode="invite", invite_code=code)
            accepted.append(f"racer{n}")
        except invites.InviteRefused as exc:
            refused.append(exc.code)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=one, args=(n,)) for n in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    return accepted, refused


@pytest.mark.parametrize("max_uses", [1, 5])
def test_concurrent_signups_with_one_code_never_pass_its_uses_and_reward_once_each(make_user, max_uses):
    inviter = make_user("inviter")
    invite = invites.create(inviter=inviter, created_by=inviter, max_uses=max_uses)
    before = credits.get_balance(inviter)
    accepted, refused = sign_up_at_once(invite.code, THREADS)
    assert len(accepted) == max_uses
    assert refused == ["used_up"] * (THREADS - max_uses)
    invite.refresh_from_db()
    assert invite.uses == max_uses
    assert get_user_model().objects.filter(username__startswith="racer").count() == max_uses
    assert AccountSignup.objects.filter(invite=invite).count() == max_uses
    rewards = CreditTransaction.objects.filter(account__user=inviter, kind="invite_reward")
    assert rewards.count() == max_uses
    assert credits.get_balance(inviter) == before + Decimal(50) * max_uses
    assert credits.verify_ledger() == []


def test_the_database_refuses_uses_past_max_uses(make_user):
    from django.db import IntegrityError

    invite = invites.create(inviter=None, created_by=None, max_uses=1)
    with pytest.raises(IntegrityError):
        InviteCode.objects.filter(pk=invite.pk).update(uses=2)


def test_staff_approving_one_account_at_the_same_moment_credit_it_once(make_user):
    from conversations.services.accounts import approval

    user = make_user(
        "waiter",
    )
    AccountSignup.objects.create(user=user, mode="approval", awaiting_approval=True)
    staff = [make_user(f"staff{n}", is_staff=True) for n in range(THREADS)]
    barrier = threading.Barrier(THREADS)
    counts = []

    def one(by) -> None:
        try:
            barrier.wait(timeout=10)
            counts.append(approval.approve([user.pk], by=by))
        finally:
            connections.close_all()

    threads = [threading.Thread(target=one, args=(by,)) for by in staff]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert sorted(counts) == [0] * (THREADS - 1) + [1]
    assert CreditTransaction.objects.filter(account__user=user, kind="signup_bonus").count() == 2  # open + approval
    assert credits.verify_ledger() == []
