"""Operators' CSV reports over a date range: the ledger row by row, and usage per user, per group, per model or per
day (admin: /admin/reports/; ``manage.py exportreport``).

Built to stream: the rows come from ``QuerySet.iterator(chunk_size=...)`` (a server-side cursor on PostgreSQL),
the per-user/group/model/day figures are aggregated by the database, and the CSV is produced a chunk of rows at a
time, so a year of a 1,000-user instance is exported in constant memory (tests/test_reports.py measures it).

Every figure comes from the ledger, as on the usage page and the dashboard (docs/credits.md): a request is a
settled reservation, with its tokens; credits spent are what answers cost (reservations net of their refunds;
reservations still open are left out); credits added are signup bonuses, grants and refills; adjustments are the
admins' signed corrections.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from decimal import ROUND_HALF_UP, Decimal

from django.db.models import Count, F, Q, Sum
from django.db.models.functions import TruncDate
from django.utils import timezone
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy

from conversations.models import CreditTransaction

Kind = CreditTransaction.Kind
State = CreditTransaction.State
ZERO = Decimal(0)
CHUNK_ROWS = 2000  # rows fetched from the database at a time, and written per streamed chunk
MAX_DAYS = 3660  # ten years: more is a typo, not a report
NO_GROUP = "(no group)"
NO_MODEL = "(none: grants, refills, adjustments)"

DAY = re.compile(r"\d{4}-\d{2}-\d{2}")
REPORTS = {  # name -> title
    "ledger": gettext_lazy("Ledger (every row)"),
    "users": gettext_lazy("Usage per user"),
    "groups": gettext_lazy("Usage per group"),
    "models": gettext_lazy("Usage per model"),
    "days": gettext_lazy("Usage per day"),
}
USAGE_HEADER = [
    "requests",
    "prompt_tokens",
    "cached_tokens",
    "completion_tokens",
    "credits_spent",
    "credits_added",
    "adjustments",
]
LEDGER_COLUMNS = [  # (header, values_list field)
    ("id", "id"),
    ("created_at", "created_at"),
    ("user", "account__user__username"),
    ("kind", "kind"),
    ("amount", "amount"),
    ("balance_after", "balance_after"),
    ("model", "model"),
    ("state", "state"),
    ("prompt_tokens", "prompt_tokens"),
    ("cached_tokens", "cached_tokens"),
    ("completion_tokens", "completion_tokens"),
    ("message_id", "message_id"),
    ("api_key_id", "api_key_id"),
    ("reservation_id", "reservation_id"),
    ("created_by", "created_by__username"),
    ("estimated", "estimated"),
    ("note", "note"),
]


class ReportError(ValueError):
    """A request for a report that cannot be made; ``field`` names what was wrong."""

    def __init__(self, field: str, message: str):
        self.field = field
        super().__init__(message)


@dataclass(frozen=True)
class DateRange:
    start: date  # first day, included
    end: date  # last day, included

    def bounds(self) -> tuple[datetime, datetime]:
        """From midnight of the first day to midnight after the last, in ``TIME_ZONE``."""
        return (
            timezone.make_aware(datetime.combine(self.start, time.min)),
            timezone.make_aware(datetime.combine(self.end + timedelta(days=1), time.min)),
        )


def _parse_day(value: str | None, field: str) -> date:
    text = (value or "").strip()
    if not text:
        raise ReportError(field, _("Enter a date (YYYY-MM-DD)."))
    try:
        if not DAY.fullmatch(text):
            raise ValueError(text)
        return date.fromisoformat(text)
    except ValueError:
        raise ReportError(field, _("“%(value)s” is not a date: use YYYY-MM-DD.") % {"value": text[:40]}) from None


def parse_range(start: str | None, end: str | None) -> DateRange:
    """Two days as YYYY-MM-DD, the first not after the last, at most MAX_DAYS apart. Raises ReportError."""
    first, last = _parse_day(start, "start"), _parse_day(end, "end")
    if first > last:
        raise ReportError("end", _("The last day is before the first."))
    if (last - first).days >= MAX_DAYS:
        raise ReportError("end", _("A report covers at most %(days)d days.") % {"days": MAX_DAYS})
    return DateRange(first, last)


def parse_report(name: str | None) -> str:
    if name not in REPORTS:
        raise ReportError("report", _("Choose one of: %(names)s.") % {"names": ", ".join(REPORTS)})
    return name


def _rows_in(period: DateRange):
    start, end = period.bounds()
    return CreditTransaction.objects.filter(created_at__gte=start, created_at__lt=end)


def ledger_rows(period: DateRange) -> Iterator[list]:
    """The header, then every ledger row of the range, oldest first."""
    yield [header for header, _field in LEDGER_COLUMNS]
    rows = _rows_in(period).order_by("created_at", "id").values_list(*[f for _header, f in LEDGER_COLUMNS])
    yield from (list(row) for row in rows.iterator(chunk_size=CHUNK_ROWS))


_SETTLED = Q(state=State.SETTLED)
USAGE_FIGURES = {
    "requests": Count("id", filter=_SETTLED),
    "prompt": Sum("prompt_tokens", filter=_SETTLED),
    "cached": Sum("cached_tokens", filter=_SETTLED),
    "completion": Sum("completion_tokens", filter=_SETTLED),
    # Reservations still open (answers running) are not spent yet; released ones net to 0 with their refund.
    "spent": Sum("amount", filter=Q(kind__in=[Kind.CHARGE, Kind.REFUND]) & ~Q(state=State.OPEN)),
    "added": Sum("amount", filter=Q(kind__in=[Kind.SIGNUP_BONUS, Kind.GRANT, Kind.REFILL])),
    "adjusted": Sum("amount", filter=Q(kind=Kind.ADJUSTMENT)),
}


def _credits(value) -> Decimal:
    # SQLite sums decimals as floats: back to 6 places (0 - x, not -x, so none comes out as "-0").
    return Decimal(str(value or 0)).quantize(Decimal("0.000001"), rounding=ROUND_HALF_UP)


def usage_rows(period: DateRange, by: str) -> Iterator[list]:
    """The header, then one row per user, group, model or day of the range with its figures (one aggregate query,
    streamed). A user in several groups counts in each; a user in none under NO_GROUP."""
    rows = _rows_in(period)
    if by == "users":
        keys, header = ["account__user__username", "account__user_id"], ["user", "user_id"]
    elif by == "groups":
        keys, header = ["account__user__groups__name"], ["group"]
    elif by == "models":
        keys, header = ["model"], ["model"]
    elif by == "days":
        rows = rows.annotate(day=TruncDate("created_at", tzinfo=timezone.get_current_timezone()))
        keys, header = ["day"], ["day"]
    else:
        raise ReportError("report", f"no usage report by {by!r}")
    yield header + USAGE_HEADER
    # NULL (a user in no group) sorts last on every database.
    grouped = rows.values(*keys).annotate(**USAGE_FIGURES).order_by(*[F(k).asc(nulls_last=True) for k in keys])
    for row in grouped.iterator(chunk_size=CHUNK_ROWS):
        label = [row[k] for k in keys]
        if by == "groups" and label[0] is None:
            label = [NO_GROUP]
        elif by == "models" and not label[0]:
            label = [NO_MODEL]
        spent = _credits(row["spent"])
        yield label + [
            row["requests"],
            row["prompt"] or 0,
            row["cached"] or 0,
            row["completion"] or 0,
            ZERO - spent if spent else spent,
            _credits(row["added"]),
            _credits(row["adjusted"]),
        ]


def report_rows(name: str, period: DateRange) -> Iterator[list]:
    return ledger_rows(period) if name == "ledger" else usage_rows(period, name)


def csv_safe(value) -> str | int | Decimal:
    """A cell value for spreadsheets: text that starts like a formula is prefixed so Excel shows it as text."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int | Decimal):
        return value
    if hasattr(value, "isoformat"):
        return value.isoformat()
    text = str(value)
    if text[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + text
    return text


class _Line:
    """A file-like object whose write() returns what it was given: csv.writer then formats one line at a time."""

    def write(self, value: str) -> str:
        return value


def csv_chunks(rows: Iterable[list], *, rows_per_chunk: int = CHUNK_ROWS, bom: bool = True) -> Iterator[str]:
    """The rows as CSV text, a chunk of lines at a time (cells made spreadsheet-safe as in the admin's export)."""
    writer = csv.writer(_Line())
    chunk = ["\ufeff"] if bom else []
    for row in rows:
        chunk.append(writer.writerow([csv_safe(cell) for cell in row]))
        if len(chunk) >= rows_per_chunk:
            yield "".join(chunk)
            chunk = []
    if chunk:
        yield "".join(chunk)


def filename(name: str, period: DateRange) -> str:
    return f"kimichat-{name}-{period.start.isoformat()}-{period.end.isoformat()}.csv"
