"""Refills under real concurrency on PostgreSQL: runs of `manage.py refillcredits` at once (cron and the workers,
two workers) grant each period once, through the unique constraint on (schedule, user, period). Skipped on
SQLite, whose writers are serialized anyway."""

from __future__ import annotations

import threading
import time
from decimal import Decimal
from io import StringIO

import pytest
from django.contrib.auth.models import Group
from django.core.management import call_command
from django.db import connection, connections, transaction

from conversations.models import CreditTransaction, RefillGrant, RefillSchedule
from conversations.services.billing import credits, refills

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(connection.vendor != "postgresql", reason="needs PostgreSQL (set DATABASE_URL=postgres://...)"),
]
RUNS = 8
MEMBERS = 30


@pytest.fixture(autouse=True)
def _fast_password_hashing(settings):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


def in_threads(count: int, work) -> list:
    barrier = threading.Barrier(count)
    results, errors = [None] * count, []

    def run(index):
        try:
            barrier.wait()
            results[index] = work()
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert errors == []
    return results


def test_eight_commands_at_once_grant_each_member_once(make_user):
    team = Group.objects.create(name="team")
    members = [make_user(f"m{i}") for i in range(MEMBERS)]
    team.user_set.add(*members)
    RefillSchedule.objects.create(name="monthly", group=team, mode="by_amount", amount=Decimal(50))

    def command():
        out = StringIO()
        call_command("refillcredits", stdout=out)
        return out.getvalue()

    outputs = in_threads(RUNS, command)
    assert all(o.startswith("Refilled") for o in outputs)
    rows = CreditTransaction.objects.filter(kind="refill")
    assert rows.count() == MEMBERS and RefillGrant.objects.count() == MEMBERS
    assert {credits.get_balance(m) for m in members} == {Decimal(150)}
    assert credits.verify_ledger() == []


def test_a_run_that_meets_another_runs_uncommitted_grant_waits_and_grants_nothing(owner):
    """The race made certain: run A has inserted this period's grant but not committed; run B's insert waits on
    the unique index, then fails when A commits, and B grants nothing."""
    schedule = RefillSchedule.objects.create(name="top-up", user=owner, mode="up_to", amount=Decimal(400))
    period = refills.period_key(schedule.period)
    a_inserted, b_started = threading.Event(), threading.Event()

    def run_a():
        with transaction.atomic():
            grant = refills.refill_user(schedule, owner, period)
            a_inserted.set()
            b_started.wait(10)
            threading.Event().wait(0.5)  # B is now blocked on the unique index
        return grant

    waited = []

    def run_b():
        a_inserted.wait(10)
        b_started.set()
        started = time.monotonic()
        try:
            return refills.refill_user(schedule, owner, period)
        finally:
            waited.append(time.monotonic() - started)

    barrier_free = [run_a, run_b]
    results = in_threads(2, lambda: barrier_free.pop(0)())
    granted = [r for r in results if r is not None]
    assert len(granted) == 1 and granted[0].amount == 300
    assert waited[0] >= 0.4  # B really met A's row: it waited on the unique index until A committed
    assert credits.get_balance(owner) == 400
    assert CreditTransaction.objects.filter(kind="refill").count() == 1
