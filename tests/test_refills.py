"""Scheduled refills (services/billing/refills.py, `manage.py refillcredits`): once per period however often they
run, a late run grants the current period once, top-up never lowers a balance, amounts are positive, groups
refill each active member, and every refill is a ledger row."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from decimal import Decimal
from io import StringIO

import pytest
from asgiref.sync import sync_to_async
from django.contrib.auth.models import Group
from django.core.cache import cache
from django.core.exceptions import ValidationError
from django.core.management import call_command
from django.db import IntegrityError, transaction

from conversations.models import CreditTransaction, RefillGrant, RefillSchedule
from conversations.services.billing import credits, refills

pytestmark = pytest.mark.django_db

MARCH = datetime(2026, 3, 10, 12, tzinfo=UTC)
APRIL = datetime(2026, 4, 2, 12, tzinfo=UTC)
JUNE = datetime(2026, 6, 20, 12, tzinfo=UTC)


@pytest.fixture(autouse=True)
def _fast_password_hashing(settings):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


def schedule(**fields) -> RefillSchedule:
    fields.setdefault("name", "monthly allowance")
    fields.setdefault("amount", Decimal(500))
    return RefillSchedule.objects.create(**fields)


def refill_rows(user=None):
    rows = CreditTransaction.objects.filter(kind=CreditTransaction.Kind.REFILL)
    return rows.filter(account__user=user) if user is not None else rows


def test_period_names_follow_the_calendar_of_the_time_zone(settings):
    assert refills.period_key("monthly", MARCH) == "2026-03"
    assert refills.period_key("weekly", MARCH) == "2026-W11"
    assert refills.period_key("daily", MARCH) == "2026-03-10"
    # 23:30 UTC on 31 March is already 1 April in Tokyo: April's refill.
    settings.TIME_ZONE = "Asia/Tokyo"
    assert refills.period_key("monthly", datetime(2026, 3, 31, 23, 30, tzinfo=UTC)) == "2026-04"


def test_top_up_to_a_level_twice_in_a_period_grants_once(owner):
    schedule(user=owner, mode="up_to", amount=Decimal(500))
    report = refills.run_refills(now=MARCH)
    assert (report.granted, report.credits) == (1, Decimal(400))  # 100 signup credits + 400 = 500
    assert credits.get_balance(owner) == 500
    again = refills.run_refills(now=MARCH)
    assert (again.granted, again.already_done) == (0, 1)
    row = refill_rows(owner).get()
    assert (row.amount, row.balance_after) == (Decimal(400), Decimal(500))
    assert row.note == "refill “monthly allowance” for 2026-03"
    assert RefillGrant.objects.get().transaction == row
    assert credits.verify_ledger() == []


def test_top_up_never_lowers_a_balance_above_the_level(owner):
    credits.grant(owner, 900)  # 1,000
    schedule(user=owner, mode="up_to", amount=Decimal(500))
    report = refills.run_refills(now=MARCH)
    assert (report.granted, report.already_full) == (0, 1)
    assert credits.get_balance(owner) == 1000 and not refill_rows().exists()
    # Recorded: spending below the level later this month does not refill twice in the month.
    credits.adjust(owner, -800, created_by=None, note="spent")
    assert refills.run_refills(now=MARCH).granted == 0
    assert credits.get_balance(owner) == 200
    # Next month it does, up to the level and not beyond.
    assert refills.run_refills(now=APRIL).credits == Decimal(300)
    assert credits.get_balance(owner) == 500


def test_by_amount_adds_the_amount_each_period(owner):
    schedule(user=owner, mode="by_amount", amount=Decimal("25.5"), period="weekly")
    refills.run_refills(now=MARCH)
    refills.run_refills(now=MARCH)
    assert credits.get_balance(owner) == Decimal("125.5")
    refills.run_refills(now=datetime(2026, 3, 16, tzinfo=UTC))  # the next Monday: a new week
    assert credits.get_balance(owner) == Decimal("151")
    assert list(RefillGrant.objects.order_by("pk").values_list("period", flat=True)) == ["2026-W11", "2026-W12"]


def test_a_late_run_grants_the_current_period_once_not_every_missed_one(owner):
    schedule(user=owner, mode="by_amount", amount=Decimal(10))
    refills.run_refills(now=MARCH)
    # Nothing ran in April or May; June's run grants June only.
    report = refills.run_refills(now=JUNE)
    assert (report.granted, report.credits) == (1, Decimal(10))
    assert list(RefillGrant.objects.order_by("pk").values_list("period", flat=True)) == ["2026-03", "2026-06"]
    assert credits.get_balance(owner) == 120


def test_a_group_schedule_refills_each_active_member(make_user, owner):
    staff = Group.objects.create(name="staff")
    members = [make_user(f"member{i}") for i in range(3)]
    gone = make_user("gone", is_active=False)
    staff.user_set.add(*members, gone)
    schedule(group=staff, mode="up_to", amount=Decimal(300))
    report = refills.run_refills(now=MARCH)
    assert (report.granted, report.credits) == (3, Decimal(600))
    assert {u.pk: credits.get_balance(u) for u in members} == {u.pk: Decimal(300) for u in members}
    assert credits.get_balance(gone) == 100 and credits.get_balance(owner) == 100  # inactive, not a member
    # A member who joins later in the month is refilled on the next run; the others are not refilled again.
    late = make_user("late")
    staff.user_set.add(late)
    report = refills.run_refills(now=MARCH)
    assert (report.granted, report.already_done) == (1, 3)
    assert refill_rows().count() == 4


def test_inactive_schedules_grant_nothing(owner):
    schedule(user=owner, active=False)
    assert refills.run_refills(now=MARCH).granted == 0
    assert not RefillGrant.objects.exists()


def test_amounts_must_be_positive_in_the_form_the_database_and_the_ledger(owner):
    with pytest.raises(ValidationError) as error:
        RefillSchedule(name="x", user=owner, amount=Decimal(-5)).full_clean()
    assert "amount" in error.value.message_dict
    with pytest.raises(IntegrityError), transaction.atomic():
        RefillSchedule.objects.create(name="x", user=owner, amount=Decimal(0))
    with pytest.raises(IntegrityError), transaction.atomic():  # neither a user nor a group
        RefillSchedule.objects.create(name="x", amount=Decimal(5))
    for bad in (Decimal(-1), Decimal(0), 0.5, "1e-7"):
        with pytest.raises(credits.InvalidAmount):
            credits.refill(owner, amount=bad)
        with pytest.raises(credits.InvalidAmount):
            credits.refill(owner, up_to=bad)
    with pytest.raises(credits.InvalidAmount):
        credits.refill(owner, amount=1, up_to=1)
    assert credits.get_balance(owner) == 100 and not refill_rows().exists()


def test_top_up_cannot_overshoot_the_level_after_spending_races(owner):
    """The level is compared with the balance under the row lock: the amount added is level - balance as locked."""
    schedule(user=owner, mode="up_to", amount=Decimal(150))
    credits.reserve(owner, model="kimi-k2", prompt_tokens=1, max_completion_tokens=1)  # 1 credit held: 99
    refills.run_refills(now=MARCH)
    assert credits.get_balance(owner) == 150
    assert refill_rows(owner).get().amount == 51


def test_the_command_runs_the_refills_and_is_idempotent(owner, make_user):
    schedule(user=owner, mode="by_amount", amount=Decimal(5))
    out = StringIO()
    call_command("refillcredits", stdout=out)
    assert "Refilled 1 users with 5.00 credits" in out.getvalue()
    out = StringIO()
    call_command("refillcredits", stdout=out)
    assert "Refilled 0 users" in out.getvalue() and "1 already refilled this period" in out.getvalue()
    assert credits.get_balance(owner) == 105


@pytest.mark.django_db(transaction=True)
async def test_the_worker_schedule_runs_once_per_interval_across_workers(owner, settings):
    """Every worker runs refill_every_few_minutes; the cache lock lets one of them run per interval."""
    settings.KIMICHAT_REFILL_INTERVAL = 300
    await sync_to_async(schedule)(user=owner, mode="by_amount", amount=Decimal(7))
    assert await cache.aadd(refills.LOCK_KEY, 1, 300)  # another worker holds this interval
    task = asyncio.ensure_future(refills.refill_every_few_minutes())
    await asyncio.sleep(0.2)
    assert await sync_to_async(refill_rows().count)() == 0
    task.cancel()
    await cache.adelete(refills.LOCK_KEY)  # the interval is over
    task = asyncio.ensure_future(refills.refill_every_few_minutes())
    for _ in range(50):
        await asyncio.sleep(0.1)
        if await sync_to_async(refill_rows().count)():
            break
    task.cancel()
    assert await sync_to_async(credits.get_balance)(owner) == 107
