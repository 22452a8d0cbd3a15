"""Spending caps (services/billing/budgets.py): per user per day and per month, set by staff and lowered by the user,
and per group (a shared monthly budget, a cap per member), checked inside the reservation, also under 50 threads."""

from __future__ import annotations

import datetime
import threading
import zoneinfo
from decimal import Decimal as D

import pytest
from django.contrib.auth.models import Group
from django.db import connection, connections
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from conversations.models import CreditTransaction, GroupPolicy, UserBudget
from conversations.services.billing import budgets, credits, pricing
from conversations.services.billing.budgets import BudgetExceeded

MODEL = "budget-test-model"
pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _one_credit_per_answer():
    pricing.set_price(MODEL, per_request=D(1))  # every reservation of MODEL holds exactly 1 credit


def reserve(user, **extra):
    return credits.reserve(user, model=MODEL, prompt_tokens=10, max_completion_tokens=10, **extra)


def caps(user, **values):
    return UserBudget.objects.update_or_create(user=user, defaults=values)[0]


def group_of(*users, name="team", **policy):
    group = Group.objects.create(name=name)
    group.user_set.add(*users)
    GroupPolicy.objects.create(group=group, **policy)
    return group


def test_no_caps_reserve_as_before(owner):
    for _ in range(5):
        reserve(owner)
    assert credits.get_balance(owner) == D(95)


def test_a_daily_cap_refuses_the_reservation_that_would_exceed_it_and_writes_nothing(owner):
    caps(owner, daily_cap=D(3))
    for _ in range(3):
        reserve(owner)
    rows = CreditTransaction.objects.count()
    with pytest.raises(BudgetExceeded) as refused:
        reserve(owner)
    exc = refused.value
    assert (exc.code, exc.cap, exc.spent, exc.cost, exc.set_by) == (budgets.DAILY, D(3), D(3), D(1), "staff")
    assert CreditTransaction.objects.count() == rows  # nothing written
    assert credits.get_balance(owner) == D(97)
    # It resets at the next local midnight, and says so.
    assert exc.resets_at == budgets.periods().day_end
    assert exc.details()["resets_at"] == exc.resets_at.isoformat()
    assert (
        "daily" in exc.message()
        and exc.resets_at.astimezone(timezone.get_default_timezone()).strftime("%Y-%m-%d %H:%M") in exc.message()
    )


def test_released_and_refunded_parts_do_not_count_as_spent(owner):
    caps(owner, daily_cap=D(2))
    first = reserve(owner)
    second = reserve(owner)
    with pytest.raises(BudgetExceeded):  # two open reservations hold the whole cap
        reserve(owner)
    credits.release(first)  # a failed request costs nothing: its credits are free again
    reserve(owner)
    pricing.set_price(MODEL, per_request=D("0.25"))
    credits.settle(second, message=None, usage=None, estimated=True)  # 1 held, 0.25 charged: 0.75 freed
    assert budgets.user_spending(owner.pk, budgets.periods()) == (D("1.25"), D("1.25"))


def test_a_monthly_cap_counts_earlier_days_of_the_month_and_resets_on_the_first(owner):
    caps(owner, monthly_cap=D(3))
    at = budgets.periods()
    reserve(owner)
    reserve(owner)
    # One answer from the first minute of the month, one from the month before: only the first counts.
    CreditTransaction.objects.filter(kind="charge").update(created_at=at.month_start)
    earlier = reserve(owner)
    CreditTransaction.objects.filter(pk=earlier.transaction_id).update(
        created_at=at.month_start - datetime.timedelta(seconds=1)
    )
    reserve(owner)
    with pytest.raises(BudgetExceeded) as refused:
        reserve(owner)
    assert refused.value.code == budgets.MONTHLY
    assert refused.value.spent == D(3)
    assert refused.value.resets_at == at.month_end
    assert timezone.localtime(at.month_end).day == 1


def test_the_user_may_lower_their_cap_below_staffs_but_never_raise_it_above(owner):
    caps(owner, daily_cap=D(5), monthly_cap=D(50))
    budgets.set_own_caps(owner, daily=D(2), monthly=None)
    reserve(owner)
    reserve(owner)
    with pytest.raises(BudgetExceeded) as refused:
        reserve(owner)
    assert (refused.value.cap, refused.value.set_by) == (D(2), "user")
    assert "You set this cap yourself" in refused.value.message()
    with pytest.raises(budgets.InvalidOwnCap) as too_high:
        budgets.set_own_caps(owner, daily=D(6), monthly=None)
    assert too_high.value.field == "daily" and "5" in str(too_high.value)
    with pytest.raises(budgets.InvalidOwnCap):
        budgets.set_own_caps(owner, daily=None, monthly=D("50.000001"))
    budgets.set_own_caps(owner, daily=None, monthly=None)  # removing their own cap leaves staff's
    budget = UserBudget.objects.get(user=owner)
    assert (budget.daily_cap, budget.own_daily_cap) == (D(5), None)
    reserve(owner)  # 3 of staff's 5
    status = budgets.budget_status(owner)
    assert [(limit.code, limit.cap, limit.spent, limit.set_by) for limit in status.limits] == [
        (budgets.DAILY, D(5), D(3), "staff"),
        (budgets.MONTHLY, D(50), D(3), "staff"),
    ]


def test_staff_lowering_their_cap_under_the_users_own_wins(owner):
    caps(owner, own_daily_cap=D(4), daily_cap=D(1))
    reserve(owner)
    with pytest.raises(BudgetExceeded) as refused:
        reserve(owner)
    assert (refused.value.cap, refused.value.set_by) == (D(1), "staff")


def test_a_group_shares_one_monthly_budget_among_its_members(make_user):
    alice, bob, carol = make_user("alice"), make_user("bob"), make_user("carol")
    group_of(alice, bob, monthly_budget=D(3))
    reserve(alice)
    reserve(bob)
    reserve(alice)
    reserve(carol)  # not a member: her spending is hers alone
    with pytest.raises(BudgetExceeded) as refused:
        reserve(bob)
    exc = refused.value
    assert (exc.code, exc.cap, exc.spent, exc.group) == (budgets.GROUP, D(3), D(3), "team")
    assert exc.resets_at == budgets.periods().month_end
    assert "team" in exc.message()


def test_a_member_of_two_groups_is_counted_once_in_each(make_user):
    alice, bob = make_user("alice"), make_user("bob")
    group_of(alice, bob, name="budgeted", monthly_budget=D(10))
    other = Group.objects.create(name="plain")  # no policy: a second join row must not double the sums
    other.user_set.add(alice, bob)
    group_of(alice, name="models-only", allowed_models=[MODEL])
    for _ in range(3):
        reserve(alice)
    spent = budgets.group_spending([Group.objects.get(name="budgeted").pk], budgets.periods())
    assert list(spent.values()) == [D(3)]


def test_a_per_member_cap_holds_each_member_to_their_share(make_user):
    alice, bob = make_user("alice"), make_user("bob")
    group_of(alice, bob, monthly_budget=D(100), member_monthly_cap=D(2))
    reserve(alice)
    reserve(alice)
    with pytest.raises(BudgetExceeded) as refused:
        reserve(alice)
    assert (refused.value.code, refused.value.cap, refused.value.group) == (budgets.GROUP_MEMBER, D(2), "team")
    reserve(bob)  # bob has his own share left


def test_periods_follow_settings_time_zone_across_a_dst_change(settings):
    settings.TIME_ZONE = "Europe/Berlin"
    zone = zoneinfo.ZoneInfo("Europe/Berlin")
    at = budgets.periods(datetime.datetime(2026, 3, 29, 12, 0, tzinfo=zone))  # clocks go forward at 02:00
    assert at.day_start == datetime.datetime(2026, 3, 29, tzinfo=zone)
    assert at.day_end.astimezone(datetime.UTC) - at.day_start.astimezone(datetime.UTC) == datetime.timedelta(hours=23)
    assert at.month_start == datetime.datetime(2026, 3, 1, tzinfo=zone)
    assert at.month_end == datetime.datetime(2026, 4, 1, tzinfo=zone)
    # 23:30 UTC on the 31st of December is already the new year in Berlin.
    late = budgets.periods(datetime.datetime(2026, 12, 31, 23, 30, tzinfo=datetime.UTC))
    assert late.month_start == datetime.datetime(2027, 1, 1, tzinfo=zone)
    assert late.month_end == datetime.datetime(2027, 2, 1, tzinfo=zone)


def test_the_check_costs_two_queries_without_caps_and_four_with_a_cap_and_a_group_budget(owner, make_user):
    credits.open_account(owner)
    with CaptureQueriesContext(connection) as plain:
        budgets.check_budgets(owner.pk, D(1))
    assert len(plain) == 2  # the user's caps; their groups' budgets
    caps(owner, daily_cap=D(5))
    group_of(owner, make_user("mate"), monthly_budget=D(5))
    with CaptureQueriesContext(connection) as full:
        budgets.check_budgets(owner.pk, D(1))
    assert len(full) == 4  # + the user's spending (day and month in one); + the groups' spending


# --- concurrency: the cap holds under 50 threads reserving at once (SQLite and PostgreSQL) -----------------------


def _race(users, threads_count=50):
    barrier = threading.Barrier(threads_count)
    outcomes: list[str] = []
    lock = threading.Lock()

    def spend(user):
        try:
            barrier.wait(timeout=30)
            reserve(user)
            result = "ok"
        except BudgetExceeded:
            result = "capped"
        except credits.InsufficientCredits:
            result = "broke"
        except Exception as exc:  # noqa: BLE001 - reported by the assertions
            result = repr(exc)
        finally:
            connections.close_all()
        with lock:
            outcomes.append(result)

    threads = [threading.Thread(target=spend, args=(users[i % len(users)],)) for i in range(threads_count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    return outcomes


@pytest.mark.django_db(transaction=True)
def test_fifty_concurrent_reservations_never_exceed_a_users_cap_nor_the_balance(settings, make_user):
    settings.KIMICHAT_SIGNUP_CREDITS = 10
    pricing.set_price(MODEL, per_request=D(1))
    capped, broke = make_user("capped"), make_user("broke")
    caps(capped, daily_cap=D(7))  # the cap bites before the balance (10)
    outcomes = _race([capped, broke])  # 25 threads each; "broke" has no cap: its balance of 10 bites
    assert sorted(set(outcomes)) == ["broke", "capped", "ok"], outcomes
    assert outcomes.count("ok") == 17 and outcomes.count("capped") == 18 and outcomes.count("broke") == 15
    assert credits.get_balance(capped) == D(3)
    assert credits.get_balance(broke) == D(0)
    assert budgets.user_spending(capped.pk, budgets.periods())[0] == D(7)
    assert credits.verify_ledger() == []


@pytest.mark.django_db(transaction=True)
def test_fifty_concurrent_reservations_of_five_members_never_exceed_their_groups_budget(settings, make_user):
    settings.KIMICHAT_SIGNUP_CREDITS = 100
    pricing.set_price(MODEL, per_request=D(1))
    members = [make_user(f"member{i}") for i in range(5)]
    group = group_of(*members, monthly_budget=D(12), member_monthly_cap=D(4))
    outcomes = _race(members)
    assert sorted(set(outcomes)) == ["capped", "ok"], outcomes
    assert outcomes.count("ok") == 12
    assert budgets.group_spending([group.pk], budgets.periods()) == {group.pk: D(12)}
    assert all(budgets.user_spending(m.pk, budgets.periods())[1] <= 4 for m in members)
    assert credits.verify_ledger() == []


def test_a_cap_of_zero_refuses_every_paid_answer_and_shows_as_spent_in_full(owner):
    caps(owner, monthly_cap=D(0))
    with pytest.raises(BudgetExceeded) as refused:
        reserve(owner)
    assert (refused.value.code, refused.value.cap) == (budgets.MONTHLY, D(0))
    [limit] = budgets.budget_status(owner).limits
    assert (limit.cap, limit.spent, limit.remaining, limit.percent) == (D(0), D(0), D(0), 100)
