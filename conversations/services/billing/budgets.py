"""Spending caps: per user per day and per month, and per Django group per month (a budget its members share, and a
cap per member). docs/credits.md, "Budgets".

Spending comes from the ledger: an answer's reservation counts from the moment it is made (in the period of its
charge row's ``created_at``), first at the amount held, then, once settled or released, at that amount less the
refund that closed it. So "spent" is what settled answers cost plus what running answers hold.

``check_budgets`` is called by ``credits.reserve`` inside the reservation's transaction, after the account's row lock
and before the charge is written: reserve only if spent + this reservation ≤ every cap that applies. Concurrent
reservations of one user queue on the account row lock; those of a group's members queue on the lock of the group's
``GroupPolicy`` row (taken after the account's, in primary-key order, so two members never wait on each other in a
cycle). On SQLite the IMMEDIATE transactions serialize every writer instead.

Periods are those of ``settings.TIME_ZONE``: a day starts at local midnight, a month on the 1st at local midnight;
a refusal names the limit and when it resets (the next period's start).

Queries on the send path: a user with no cap and no budgeted group costs two (their caps; their groups' budgets).
A cap adds one (the user's spending today and this month, both in one aggregate); a shared group budget one more
(per budgeted group of the user).
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from decimal import Decimal

from django.db import transaction
from django.db.models import Q, Sum
from django.utils import timezone
from django.utils.translation import gettext

from conversations.models import CreditAccount, CreditTransaction, GroupPolicy, UserBudget
from conversations.services.billing import pricing

ZERO = Decimal(0)
Kind = CreditTransaction.Kind

# The stable codes of a refusal (the websocket's error frame, the /v1/ API's error ``code``).
DAILY = "daily_budget_exceeded"
MONTHLY = "monthly_budget_exceeded"
GROUP = "group_budget_exceeded"
GROUP_MEMBER = "group_member_budget_exceeded"


class BudgetExceeded(Exception):
    """Reserving ``cost`` would take spending over ``cap``. Nothing was written."""

    def __init__(self, code: str, *, cap: Decimal, spent: Decimal, cost: Decimal, resets_at, set_by: str, group=""):
        self.code = code
        self.cap = cap
        self.spent = spent  # in the period so far, running answers included
        self.cost = cost  # what this answer would reserve
        self.resets_at = resets_at  # aware datetime: the next period's start
        self.set_by = set_by  # "staff", "user" or "group"
        self.group = group  # the group's name for a group limit
        super().__init__(self.message())

    def message(self) -> str:
        values = {
            "cap": f"{self.cap.normalize():f}",
            "spent": f"{self.spent.normalize():f}",
            "cost": f"{self.cost.normalize():f}",
            "group": self.group,
            "reset": timezone.localtime(self.resets_at).strftime("%Y-%m-%d %H:%M %Z"),
        }
        if self.code == GROUP:
            text = gettext(
                "The monthly budget of the group “%(group)s” (%(cap)s credits) would be exceeded: its members "
                "have spent %(spent)s and this answer may cost up to %(cost)s. It resets on %(reset)s."
            )
        elif self.code == GROUP_MEMBER:
            text = gettext(
                "Your monthly cap as a member of “%(group)s” (%(cap)s credits) would be exceeded: you have spent "
                "%(spent)s and this answer may cost up to %(cost)s. It resets on %(reset)s."
            )
        elif self.code == DAILY:
            text = gettext(
                "Your daily spending cap (%(cap)s credits) would be exceeded: you have spent %(spent)s today and "
                "this answer may cost up to %(cost)s. It resets on %(reset)s."
            )
        else:
            text = gettext(
                "Your monthly spending cap (%(cap)s credits) would be exceeded: you have spent %(spent)s this month "
                "and this answer may cost up to %(cost)s. It resets on %(reset)s."
            )
        if self.set_by == "user":
            text += " " + gettext("You set this cap yourself; you can raise or remove it on the usage page.")
        return text % values

    def details(self) -> dict:
        """The refusal's fields for an error frame or body: strings, as every credit amount the API sends."""
        return {
            "cap": str(self.cap),
            "spent": str(self.spent),
            "estimated_cost": str(self.cost),
            "resets_at": self.resets_at.isoformat(),
            "set_by": self.set_by,
            **({"group": self.group} if self.group else {}),
        }


@dataclass(frozen=True, slots=True)
class Periods:
    day_start: datetime.datetime
    day_end: datetime.datetime
    month_start: datetime.datetime
    month_end: datetime.datetime


def periods(now: datetime.datetime | None = None) -> Periods:
    """Today and this month in settings.TIME_ZONE, as aware datetimes (a DST change makes a day 23 or 25 hours)."""
    zone = timezone.get_default_timezone()
    local = (now or timezone.now()).astimezone(zone)
    today = local.date()
    first = today.replace(day=1)
    next_first = (first + datetime.timedelta(days=32)).replace(day=1)

    def midnight(day: datetime.date) -> datetime.datetime:
        return datetime.datetime.combine(day, datetime.time(0), tzinfo=zone)

    return Periods(
        day_start=midnight(today),
        day_end=midnight(today + datetime.timedelta(days=1)),
        month_start=midnight(first),
        month_end=midnight(next_first),
    )


def _answers_since(start: datetime.datetime, accounts: Q) -> Q:
    """The ledger rows of answers reserved since ``start`` on ``accounts``: their charges, and the refunds that closed
    them. The refunds are matched by their reservation's id (``IN`` a subquery the database runs once), not by a
    join per row: a join made the group's sum over 20,000 rows take 240 ms on PostgreSQL."""
    reserved = CreditTransaction.objects.filter(accounts, kind=Kind.CHARGE, created_at__gte=start).values("pk")
    return Q(kind=Kind.CHARGE, created_at__gte=start) | Q(kind=Kind.REFUND, reservation_id__in=reserved)


def _spent(total) -> Decimal:
    return pricing.quantize(-(total or ZERO))  # charges are negative; SQLite sums as floats: back to 6 places


def user_spending(user_id: int, at: Periods) -> tuple[Decimal, Decimal]:
    """(today, this month): what the user's answers reserved in each period less what was refunded. One query,
    served by credit_tx_account_created (a refund is written after its reservation, so ``created_at`` bounds both)."""
    account = Q(account__user_id=user_id)
    totals = (
        CreditTransaction.objects.filter(account, created_at__gte=at.month_start)
        .filter(_answers_since(at.month_start, account))
        .aggregate(day=Sum("amount", filter=_answers_since(at.day_start, account)), month=Sum("amount"))
    )
    return _spent(totals["day"]), _spent(totals["month"])


def group_spending(group_ids: list[int], at: Periods) -> dict[int, Decimal]:
    """Each group's spending this month: all its members' answers. One query per group."""
    spent = {}
    for group_id in group_ids:
        members = Q(account_id__in=CreditAccount.objects.filter(user__groups=group_id).values("pk"))
        total = (
            CreditTransaction.objects.filter(members, created_at__gte=at.month_start)
            .filter(_answers_since(at.month_start, members))
            .aggregate(total=Sum("amount"))["total"]
        )
        spent[group_id] = _spent(total)
    return spent


def _lowest(*caps) -> tuple[Decimal | None, str]:
    """The lower of the staff cap and the user's own (the user's when equal), and who set it."""
    staff, own = caps
    if own is not None and (staff is None or own <= staff):
        return own, "user"
    return staff, "staff"


def without_caps(user_ids) -> set[int]:
    """The users among ``user_ids`` no spending cap applies to (``check_budgets`` returns at once for them: no cap of
    their own or staff's, no group with a budget or a member cap). Two queries for any number of users."""
    user_ids = set(user_ids)
    any_cap = Q()
    for name in ("daily_cap", "own_daily_cap", "monthly_cap", "own_monthly_cap"):
        any_cap |= Q(**{f"{name}__isnull": False})
    capped = set(UserBudget.objects.filter(any_cap, user_id__in=user_ids).values_list("user_id", flat=True))
    policies = GroupPolicy.objects.filter(group__user__id__in=user_ids).filter(
        Q(monthly_budget__isnull=False) | Q(member_monthly_cap__isnull=False)
    )
    capped.update(policies.values_list("group__user__id", flat=True))
    return user_ids - capped


def check_budgets(user_id: int, cost: Decimal, now: datetime.datetime | None = None) -> None:
    """Raise BudgetExceeded if reserving ``cost`` would take the user, or a group of theirs, over a cap.

    Must run inside the reservation's ``atomic``, after the user's credit account is locked: the group budgets'
    rows are locked here until the reservation commits."""
    budget = UserBudget.objects.filter(user_id=user_id).first()
    policies = list(
        GroupPolicy.objects.select_for_update(of=("self",))
        .filter(group__user__id=user_id)
        .filter(Q(monthly_budget__isnull=False) | Q(member_monthly_cap__isnull=False))
        .select_related("group")
        .order_by("pk")
    )
    daily, daily_by = _lowest(budget.daily_cap, budget.own_daily_cap) if budget else (None, "")
    monthly, monthly_by = _lowest(budget.monthly_cap, budget.own_monthly_cap) if budget else (None, "")
    if daily is None and monthly is None and not policies:
        return
    at = periods(now)
    today, month = user_spending(user_id, at)

    def refuse(code, cap, spent, resets_at, set_by, group=""):
        raise BudgetExceeded(code, cap=cap, spent=spent, cost=cost, resets_at=resets_at, set_by=set_by, group=group)

    if daily is not None and today + cost > daily:
        refuse(DAILY, daily, today, at.day_end, daily_by)
    if monthly is not None and month + cost > monthly:
        refuse(MONTHLY, monthly, month, at.month_end, monthly_by)
    for policy in policies:
        cap = policy.member_monthly_cap
        if cap is not None and month + cost > cap:
            refuse(GROUP_MEMBER, cap, month, at.month_end, "group", policy.group.name)
    shared = [policy for policy in policies if policy.monthly_budget is not None]
    if shared:
        spent = group_spending([policy.group_id for policy in shared], at)
        for policy in shared:
            group_spent = spent.get(policy.group_id, ZERO)
            if group_spent + cost > policy.monthly_budget:
                refuse(GROUP, policy.monthly_budget, group_spent, at.month_end, "group", policy.group.name)


# --- what the user sees and sets ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Limit:
    """One cap that applies to a user, with what was spent against it in its period."""

    code: str
    period: str  # "day" or "month"
    cap: Decimal
    spent: Decimal
    resets_at: datetime.datetime
    set_by: str  # "staff", "user" or "group"
    group: str = ""

    @property
    def remaining(self) -> Decimal:
        return max(self.cap - self.spent, ZERO)

    @property
    def percent(self) -> int:
        return 100 if self.cap <= 0 else min(100, int(self.spent * 100 / self.cap))

    def as_dict(self) -> dict:
        return {
            "code": self.code,
            "period": self.period,
            "cap": str(self.cap),
            "spent": str(self.spent),
            "remaining": str(self.remaining),
            "resets_at": self.resets_at.isoformat(),
            "set_by": self.set_by,
            **({"group": self.group} if self.group else {}),
        }


@dataclass(frozen=True, slots=True)
class BudgetStatus:
    limits: list[Limit]
    staff_daily: Decimal | None
    staff_monthly: Decimal | None
    own_daily: Decimal | None
    own_monthly: Decimal | None

    def as_dict(self) -> dict:
        def text(value):
            return None if value is None else str(value)

        return {
            "limits": [limit.as_dict() for limit in self.limits],
            "staff": {"daily": text(self.staff_daily), "monthly": text(self.staff_monthly)},
            "own": {"daily": text(self.own_daily), "monthly": text(self.own_monthly)},
        }


def budget_status(user, now: datetime.datetime | None = None) -> BudgetStatus:
    """Every cap that applies to the user and how much of it is spent (the usage page, GET /api/me/budget/)."""
    budget = UserBudget.objects.filter(user_id=user.pk).first()
    policies = list(
        GroupPolicy.objects.filter(group__user__id=user.pk)
        .filter(Q(monthly_budget__isnull=False) | Q(member_monthly_cap__isnull=False))
        .select_related("group")
        .order_by("group__name")
    )
    at = periods(now)
    limits = []
    daily, daily_by = _lowest(budget.daily_cap, budget.own_daily_cap) if budget else (None, "")
    monthly, monthly_by = _lowest(budget.monthly_cap, budget.own_monthly_cap) if budget else (None, "")
    # Two queries when no cap applies; the spending only when one does.
    today, month = user_spending(user.pk, at) if daily is not None or monthly is not None or policies else (ZERO, ZERO)
    if daily is not None:
        limits.append(Limit(DAILY, "day", daily, today, at.day_end, daily_by))
    if monthly is not None:
        limits.append(Limit(MONTHLY, "month", monthly, month, at.month_end, monthly_by))
    shared = [policy for policy in policies if policy.monthly_budget is not None]
    spent = group_spending([policy.group_id for policy in shared], at) if shared else {}
    for policy in policies:
        if policy.member_monthly_cap is not None:
            limits.append(
                Limit(GROUP_MEMBER, "month", policy.member_monthly_cap, month, at.month_end, "group", policy.group.name)
            )
        if policy.monthly_budget is not None:
            group_spent = spent.get(policy.group_id, ZERO)
            limits.append(
                Limit(GROUP, "month", policy.monthly_budget, group_spent, at.month_end, "group", policy.group.name)
            )
    return BudgetStatus(
        limits=limits,
        staff_daily=budget.daily_cap if budget else None,
        staff_monthly=budget.monthly_cap if budget else None,
        own_daily=budget.own_daily_cap if budget else None,
        own_monthly=budget.own_monthly_cap if budget else None,
    )


class InvalidOwnCap(ValueError):
    def __init__(self, field: str, message: str):
        super().__init__(message)
        self.field = field


def set_own_caps(user, *, daily, monthly) -> UserBudget:
    """The user's own caps (Decimal or None to remove): never above the cap staff set. Raises InvalidOwnCap.

    A user can remove or raise only what they set themselves: the staff caps stay whatever the user sends."""
    with transaction.atomic():
        budget, _created = UserBudget.objects.select_for_update().get_or_create(user_id=user.pk)
        _check_own(budget, daily, monthly)
        budget.own_daily_cap = daily
        budget.own_monthly_cap = monthly
        budget.updated_at = timezone.now()
        budget.save(update_fields=["own_daily_cap", "own_monthly_cap", "updated_at"])
    return budget


def check_own_caps(user, *, daily, monthly) -> None:
    """Raise InvalidOwnCap if these own caps could not be set (for a form's validation)."""
    _check_own(UserBudget.objects.filter(user_id=user.pk).first() or UserBudget(), daily, monthly)


def _check_own(budget: UserBudget, daily, monthly) -> None:
    for field, value, staff in (("daily", daily, budget.daily_cap), ("monthly", monthly, budget.monthly_cap)):
        if value is None:
            continue
        if value < 0:
            raise InvalidOwnCap(field, gettext("A cap cannot be negative."))
        if staff is not None and value > staff:
            raise InvalidOwnCap(
                field,
                (
                    gettext("Your daily cap cannot exceed the %(cap)s credits an administrator set.")
                    if field == "daily"
                    else gettext("Your monthly cap cannot exceed the %(cap)s credits an administrator set.")
                )
                % {"cap": f"{staff.normalize():f}"},
            )
