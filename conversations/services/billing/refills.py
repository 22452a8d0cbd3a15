"""Scheduled refills: credits granted every day, week or month to a user or to each active member of a group.

A schedule (RefillSchedule, set in the admin) either **tops up** a balance to a level (never lowering one that is
above it) or **adds** an amount. ``run_refills`` grants every active schedule's *current* period to each of its
users once:

- **Once per period, however many runs.** Each grant first inserts a RefillGrant row keyed (schedule, user,
  period), whose unique constraint refuses a second one; the ledger row (kind ``refill``, through
  ``credits.refill``) is written in the same transaction. Two runs at once (cron and a worker, two workers): on
  PostgreSQL the second insert waits for the first transaction and then fails, on SQLite writers are serialized;
  either way one grant.
- **A late run catches up with the current period only.** Periods are named by the calendar in ``TIME_ZONE``
  (``2026-11`` monthly, ``2026-W48`` weekly from Monday, ``2026-11-30`` daily). A run on 3 March after none in
  February grants March once, not February and March: a refill is an allowance for a period, and a period that
  is over is not paid out afterwards (a by-amount schedule would otherwise hand out a lump sum after an outage).
- A new schedule grants its current period on the next run; an inactive user gets nothing (and nothing is
  recorded, so reactivated within the period they are refilled).

The workers run it on a schedule (``refill_every_few_minutes``, started with the registry's background tasks): a
cache lock lets one worker try per ``KIMICHAT_REFILL_INTERVAL`` (with Redis, one for the deployment); the
database constraint is what makes it correct if two try anyway. ``manage.py refillcredits`` runs the same code
(cron alternative, docs/deployment.md).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal

from channels.db import database_sync_to_async
from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.cache import cache
from django.db import IntegrityError, transaction
from django.utils import timezone

from conversations.models import RefillGrant, RefillSchedule
from conversations.services.billing import credits

logger = logging.getLogger("conversations.billing")

LOCK_KEY = "kimichat:refills:lock"
ZERO = Decimal(0)
Period = RefillSchedule.Period


def period_key(period: str, now: datetime | None = None) -> str:
    """The name of the period ``now`` falls in, on the calendar of ``TIME_ZONE``."""
    day = timezone.localdate(now or timezone.now())
    if period == Period.DAILY:
        return day.isoformat()
    if period == Period.WEEKLY:
        year, week, _weekday = day.isocalendar()
        return f"{year}-W{week:02d}"
    if period == Period.MONTHLY:
        return f"{day.year}-{day.month:02d}"
    raise ValueError(f"unknown refill period {period!r}")


@dataclass
class RefillReport:
    granted: int = 0  # users whose balance rose
    credits: Decimal = ZERO  # what was added in all
    already_full: int = 0  # users at or above the level (recorded: not tried again this period)
    already_done: int = 0  # users this period's grant had reached before (this run or another)
    errors: list[str] = field(default_factory=list)


def recipients(schedule: RefillSchedule):
    """The active users a schedule refills: its user, or every active member of its group."""
    users = get_user_model().objects.filter(is_active=True)
    if schedule.user_id is not None:
        return users.filter(pk=schedule.user_id)
    return users.filter(groups=schedule.group_id)


def refill_user(schedule: RefillSchedule, user, period: str) -> RefillGrant | None:
    """Grant ``schedule``'s ``period`` to ``user`` once. Returns the grant, or None if it had been granted."""
    try:
        with transaction.atomic():
            grant = RefillGrant.objects.create(schedule=schedule, user=user, period=period)
            note = f"refill “{schedule.name}” for {period}"
            if schedule.mode == RefillSchedule.Mode.UP_TO:
                row = credits.refill(user, up_to=schedule.amount, note=note)
            else:
                row = credits.refill(user, amount=schedule.amount, note=note)
            if row is not None:
                grant.amount, grant.transaction = row.amount, row
                grant.save(update_fields=["amount", "transaction"])
            return grant
    except IntegrityError:
        # Another run holds this period's grant: its insert committed first (PostgreSQL waited for it).
        if RefillGrant.objects.filter(schedule=schedule, user=user, period=period).exists():
            return None
        raise


def run_refills(*, now: datetime | None = None) -> RefillReport:
    """Grant the current period of every active schedule to each of its users, once. Safe to run at any time, as
    often as wanted, from several processes at once."""
    now = now or timezone.now()
    report = RefillReport()
    schedules = RefillSchedule.objects.filter(active=True).order_by("pk")
    for schedule in schedules:
        period = period_key(schedule.period, now)
        done = RefillGrant.objects.filter(schedule=schedule, period=period).values("user_id")
        pending = recipients(schedule).exclude(pk__in=done).order_by("pk")
        report.already_done += recipients(schedule).filter(pk__in=done).count()
        for user in pending.iterator(chunk_size=500):
            try:
                grant = refill_user(schedule, user, period)
            except credits.CreditError as exc:  # pragma: no cover - amounts are validated by the model and form
                report.errors.append(f"{schedule.name} → {user.get_username()}: {exc}")
                continue
            if grant is None:
                report.already_done += 1
            elif grant.amount > 0:
                report.granted += 1
                report.credits += grant.amount
            else:
                report.already_full += 1
    if report.granted:
        logger.info("refills: %d users refilled, %s credits", report.granted, report.credits)
    return report


async def refill_every_few_minutes() -> None:
    """The background task of every worker: one of them (the cache lock) runs the refills every
    ``KIMICHAT_REFILL_INTERVAL`` seconds, so a new period is granted within about an interval of its start."""
    interval = settings.KIMICHAT_REFILL_INTERVAL
    if interval <= 0:
        return
    while True:
        try:
            if await cache.aadd(LOCK_KEY, 1, interval):
                await database_sync_to_async(run_refills)()
        except asyncio.CancelledError:
            raise
        except Exception:  # noqa: BLE001 - the next round tries again; the chat never depends on this
            logger.warning("the scheduled refills failed", exc_info=True)
        await asyncio.sleep(max(5.0, interval / 10))
