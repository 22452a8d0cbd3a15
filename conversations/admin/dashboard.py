"""The figures of the operators' admin dashboard, each computed in the database with one aggregate query.

``dashboard_data()`` runs a fixed number of queries (eight) however many users, messages and ledger rows there are;
``bar_chart()`` turns a daily series into the geometry of a server-rendered SVG bar chart (no JavaScript).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from decimal import ROUND_HALF_UP, Decimal

from django.conf import settings
from django.db.models import Count, F, Max, Q, Sum
from django.db.models.functions import TruncDate
from django.utils import dateformat, timezone
from django.utils.formats import get_format

from conversations.models import ZERO, CreditTransaction, Feedback, Message, ProviderSnapshot
from conversations.services.billing.credit_format import format_credits

CHART_DAYS = 30
TOP_USERS = 10
ERROR_WINDOW = timedelta(hours=24)
STREAMS_SHOWN = 50


def format_age(age: timedelta) -> str:
    seconds = int(age.total_seconds())
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60} min"


@dataclass(frozen=True)
class DayUsage:
    day: date
    requests: int = 0  # answers paid for that day (settled reservations in the ledger), whatever their status
    tokens: int = 0  # prompt + completion tokens of those answers
    # What answers cost in credits that day, from the ledger (a reservation still open for an answer in progress
    # is not counted; a released one nets to zero).
    credits: Decimal = ZERO

    @property
    def credits_display(self) -> str:
        return format_credits(self.credits)


@dataclass(frozen=True)
class TopUser:
    user_id: int
    username: str
    tokens: int = 0
    requests: int = 0
    credits: Decimal = ZERO

    @property
    def credits_display(self) -> str:
        return format_credits(self.credits)


@dataclass(frozen=True)
class ErrorCount:
    code: str  # "" when the message has no code
    count: int
    last_at: datetime


@dataclass(frozen=True)
class Stream:
    message_id: int
    conversation_id: int
    username: str
    model: str
    status: str
    created_at: datetime
    age: timedelta
    stale: bool  # older than the generation time limit: the reaper should have finished it

    @property
    def age_display(self) -> str:
        return format_age(self.age)


@dataclass
class FeedbackCount:
    model: str
    up: int
    down: int

    @property
    def total(self) -> int:
        return self.up + self.down

    @property
    def up_percent(self) -> int:
        """The share of thumbs up, in whole percent."""
        return round(100 * self.up / self.total) if self.total else 0


@dataclass
class Dashboard:
    now: datetime
    days: list[DayUsage]
    top_by_tokens: list[TopUser]
    top_by_credits: list[TopUser]
    errors: list[ErrorCount]
    streams: list[Stream]
    streams_more: bool  # more streams are in progress than the STREAMS_SHOWN listed
    provider: ProviderSnapshot | None  # the latest snapshot: rate-limit headers, credits header
    provider_balance: ProviderSnapshot | None  # the latest that carries a balance, with the time it was read
    totals: DayUsage = field(init=False)  # the 30 days summed (day = the first day)
    feedback: list[FeedbackCount] = field(default_factory=list)  # thumbs per model, the last 30 days

    def __post_init__(self) -> None:
        self.totals = DayUsage(
            day=self.days[0].day,
            requests=sum(d.requests for d in self.days),
            tokens=sum(d.tokens for d in self.days),
            credits=sum((d.credits for d in self.days), ZERO),
        )

    @property
    def today(self) -> DayUsage:
        return self.days[-1]

    @property
    def error_total(self) -> int:
        return sum(e.count for e in self.errors)


def window_start(now: datetime, days: int = CHART_DAYS) -> datetime:
    """Midnight (current time zone) of the first of the last ``days`` days, today included."""
    first = timezone.localdate(now) - timedelta(days=days - 1)
    return timezone.make_aware(datetime.combine(first, time.min))


def _answer_rows(start: datetime, now: datetime):
    """The ledger rows of answers in the window: settled reservations (one request each, with the answer's
    tokens) and the refunds and releases that close them, so summed amounts are what answers finally cost.
    Reservations still open (answers in progress) are left out; imported conversations have no rows; deleting a
    conversation deletes none."""
    return CreditTransaction.objects.filter(model__gt="", created_at__gte=start, created_at__lte=now).exclude(
        state=CreditTransaction.State.OPEN
    )


_SETTLED = Q(state=CreditTransaction.State.SETTLED)
ANSWER_FIGURES = {
    "requests": Count("id", filter=_SETTLED),
    "tokens": Sum(F("prompt_tokens") + F("completion_tokens"), filter=_SETTLED),
    "spent": Sum("amount"),
}


def _credits(spent) -> Decimal:
    # Ledger amounts are negative for charges; SQLite sums them as floats, hence the quantize (and 0 - x, not -x).
    return (ZERO - (spent or ZERO)).quantize(Decimal("0.000001"), rounding=ROUND_HALF_UP)


def daily_usage(*, now: datetime | None = None, days: int = CHART_DAYS) -> list[DayUsage]:
    """One row per day, oldest first, days without activity included as zeros. One query."""
    now = now or timezone.now()
    start = window_start(now, days)
    tz = timezone.get_current_timezone()
    rows = (
        _answer_rows(start, now)
        .annotate(day=TruncDate("created_at", tzinfo=tz))
        .values("day")
        .annotate(**ANSWER_FIGURES)
        .order_by()
    )
    by_day = {row["day"]: row for row in rows}
    first = start.astimezone(tz).date()
    usage = []
    for offset in range(days):
        day = first + timedelta(days=offset)
        row = by_day.get(day, {})
        usage.append(
            DayUsage(
                day=day,
                requests=row.get("requests") or 0,
                tokens=row.get("tokens") or 0,
                credits=_credits(row.get("spent")),
            )
        )
    return usage


def _top_users(order_by: str, *, now: datetime | None, days: int, limit: int) -> list[TopUser]:
    now = now or timezone.now()
    rows = (
        _answer_rows(window_start(now, days), now)
        .values("account__user_id", "account__user__username")
        .annotate(**ANSWER_FIGURES, credits=ZERO - Sum("amount"))
        .filter(**{f"{order_by}__gt": 0})
        .order_by(f"-{order_by}", "account__user__username")[:limit]
    )
    return [
        TopUser(
            user_id=row["account__user_id"],
            username=row["account__user__username"],
            tokens=row["tokens"] or 0,
            requests=row["requests"],
            credits=_credits(row["spent"]),
        )
        for row in rows
    ]


def top_users_by_tokens(*, now: datetime | None = None, days: int = CHART_DAYS, limit: int = TOP_USERS):
    """The users whose answers used the most tokens in the window. One query."""
    return _top_users("tokens", now=now, days=days, limit=limit)


def top_users_by_credits(*, now: datetime | None = None, days: int = CHART_DAYS, limit: int = TOP_USERS):
    """The users whose answers cost the most credits in the window. One query."""
    return _top_users("credits", now=now, days=days, limit=limit)


def errors_by_code(*, now: datetime | None = None, window: timedelta = ERROR_WINDOW) -> list[ErrorCount]:
    """Answers that ended in an error within the window, grouped by their error code, most frequent first."""
    now = now or timezone.now()
    rows = (
        Message.objects.filter(status=Message.Status.ERROR, created_at__gte=now - window, created_at__lte=now)
        .values("error_code")
        .annotate(count=Count("id"), last_at=Max("created_at"))
        .order_by("-count", "error_code")
    )
    return [ErrorCount(code=row["error_code"], count=row["count"], last_at=row["last_at"]) for row in rows]


def feedback_by_model(*, now: datetime | None = None, days: int = CHART_DAYS) -> list[FeedbackCount]:
    """Thumbs up and down per model over the window, the most rated model first. One query."""
    now = now or timezone.now()
    rows = (
        Feedback.objects.filter(updated_at__gte=window_start(now, days), updated_at__lte=now)
        .values("model")
        .annotate(
            up=Count("id", filter=Q(rating=Feedback.Rating.UP)), down=Count("id", filter=Q(rating=Feedback.Rating.DOWN))
        )
        .order_by()
    )
    counts = [FeedbackCount(model=row["model"], up=row["up"], down=row["down"]) for row in rows]
    return sorted(counts, key=lambda c: (-c.total, c.model))


def streams_in_progress(*, now: datetime | None = None, limit: int = STREAMS_SHOWN) -> tuple[list[Stream], bool]:
    """Answers pending or streaming right now, oldest first, with their age. One query (served by msg_in_progress)."""
    now = now or timezone.now()
    stale_after = timedelta(seconds=settings.KIMICHAT_GENERATION_TIME_LIMIT)
    rows = list(
        Message.objects.in_progress()
        .select_related("conversation__owner")
        .only("id", "status", "model", "created_at", "conversation__id", "conversation__owner__username")
        .order_by("created_at", "id")[: limit + 1]
    )
    streams = [
        Stream(
            message_id=m.pk,
            conversation_id=m.conversation_id,
            username=m.conversation.owner.username,
            model=m.model,
            status=m.status,
            created_at=m.created_at,
            age=max(now - m.created_at, timedelta(0)),
            stale=now - m.created_at > stale_after,
        )
        for m in rows[:limit]
    ]
    return streams, len(rows) > limit


def latest_provider_snapshot() -> ProviderSnapshot | None:
    return ProviderSnapshot.objects.order_by("-recorded_at", "-id").first()


def latest_provider_balance() -> ProviderSnapshot | None:
    # Header snapshots (every minute while answers stream) carry no balance: the balance is the last one read.
    return ProviderSnapshot.objects.filter(balance__isnull=False).order_by("-recorded_at", "-id").first()


def dashboard_data(*, now: datetime | None = None) -> Dashboard:
    """Everything the dashboard shows. Eight queries, whatever the size of the data."""
    now = now or timezone.now()
    streams, streams_more = streams_in_progress(now=now)
    return Dashboard(
        now=now,
        days=daily_usage(now=now),
        top_by_tokens=top_users_by_tokens(now=now),
        top_by_credits=top_users_by_credits(now=now),
        errors=errors_by_code(now=now),
        streams=streams,
        streams_more=streams_more,
        provider=latest_provider_snapshot(),
        provider_balance=latest_provider_balance(),
        feedback=feedback_by_model(now=now),
    )


# --- Charts ---------------------------------------------------------------------------------------------------


def nice_ceiling(value: float) -> float:
    """The smallest of 1, 2, 2.5, 5 × 10^k that is ≥ value: a round top for a chart's axis (1 for an empty one)."""
    if value <= 0:
        return 1
    exponent = math.floor(math.log10(value))
    for step in (1, 2, 2.5, 5, 10):
        candidate = step * 10**exponent
        if candidate >= value * (1 - 1e-12):
            return candidate
    return 10 ** (exponent + 1)  # pragma: no cover - the loop always returns


def format_number(value: int | float | Decimal) -> str:
    """Short human figures for axis labels and tooltips: 950, 1.2k, 3.4M; credits keep up to 4 decimals."""
    number = float(value)
    for threshold, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(number) >= threshold:
            return f"{number / threshold:.3g}{suffix}"
    if number == int(number):
        return str(int(number))
    return f"{number:.4f}".rstrip("0").rstrip(".")


def short_day(day: date) -> str:
    return dateformat.format(day, get_format("MONTH_DAY_FORMAT"))  # "May 3", "5月3日": the active language's


@dataclass(frozen=True)
class Bar:
    x: float
    y: float
    width: float
    height: float
    day: date
    value: int | Decimal
    label: str  # tooltip


@dataclass(frozen=True)
class Tick:
    x: float = 0
    y: float = 0
    label: str = ""
    anchor: str = "middle"  # SVG text-anchor: the last day's label ends at the plot's edge instead of crossing it


@dataclass(frozen=True)
class BarChart:
    title: str
    width: int
    height: int
    plot_left: float
    plot_right: float
    plot_top: float
    plot_bottom: float
    bars: list[Bar]
    y_ticks: list[Tick]
    x_ticks: list[Tick]
    total: str


def bar_chart(
    days: list[DayUsage], metric: str, *, title: str, width: int = 420, height: int = 170, label_every: int = 5
) -> BarChart:
    """The geometry of a bar chart of one metric ("requests", "tokens" or "credits") over the days, in SVG units."""
    left, right, top, bottom = 40.0, width - 6.0, 8.0, height - 20.0
    values = [getattr(d, metric) for d in days]
    ceiling = nice_ceiling(float(max(values, default=0)))
    slot = (right - left) / max(len(days), 1)
    bar_width = round(slot * 0.72, 2)
    bars = []
    for index, (day, value) in enumerate(zip((d.day for d in days), values, strict=True)):
        bar_height = round((bottom - top) * float(value) / ceiling, 2)
        if value and bar_height < 1:
            bar_height = 1.0  # a non-zero day stays visible
        bars.append(
            Bar(
                x=round(left + index * slot + (slot - bar_width) / 2, 2),
                y=round(bottom - bar_height, 2),
                width=bar_width,
                height=bar_height,
                day=day,
                value=value,
                label=f"{short_day(day)}: {format_number(value)} {metric}",
            )
        )
    y_ticks = [
        Tick(x=left - 6, y=round(bottom - (bottom - top) * fraction, 2), label=format_number(ceiling * fraction))
        for fraction in (0, 0.5, 1)
    ]
    last = len(days) - 1
    x_ticks = [
        Tick(x=round(left + index * slot + slot / 2, 2), y=height - 6, label=short_day(usage.day))
        if index < last
        else Tick(x=right, y=height - 6, label=short_day(usage.day), anchor="end")
        for index, usage in enumerate(days)
        if (last - index) % label_every == 0
    ]
    return BarChart(
        title=title,
        width=width,
        height=height,
        plot_left=left,
        plot_right=right,
        plot_top=top,
        plot_bottom=bottom,
        bars=bars,
        y_ticks=y_ticks,
        x_ticks=x_ticks,
        total=format_number(sum(values, 0)),
    )
