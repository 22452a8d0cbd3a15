"""Operators' CSV reports (services/billing/reports.py, /admin/reports/, `manage.py exportreport`): exact rows and
sums for a small ledger, date validation, who may download, and constant memory while streaming ~100k rows (in
the service and through Django's ASGI handler, as daphne serves it)."""

from __future__ import annotations

import csv
import io
import tracemalloc
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from django.conf import settings as django_settings
from django.contrib.auth.models import Group, Permission
from django.core.asgi import get_asgi_application
from django.core.management import CommandError, call_command
from django.test import Client
from django.urls import reverse

from conversations.models import CreditAccount, CreditTransaction, Message
from conversations.services.billing import credits, reports
from tests import asgi

pytestmark = pytest.mark.django_db
REPORTS = reverse("admin:kimichat_reports")
MARCH = {"start": "2026-03-01", "end": "2026-03-31"}


@pytest.fixture(autouse=True)
def _fast_password_hashing(settings):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


def at(day: int, hour: int = 12, month: int = 3) -> datetime:
    return datetime(2026, month, day, hour, tzinfo=UTC)


def dated(row: CreditTransaction, when: datetime) -> None:
    CreditTransaction.objects.filter(pk=row.pk).update(created_at=when)


@pytest.fixture
def ledger(make_user, make_answer):
    """alice (team), bob (team and ops), carol (no group): answers, a failed one, a grant, an adjustment in March;
    an answer in April and the signup bonuses (today) outside the range."""
    alice, bob, carol = make_user("alice"), make_user("bob"), make_user("carol")
    team, ops = Group.objects.create(name="team"), Group.objects.create(name="ops")
    team.user_set.add(alice, bob)
    ops.user_set.add(bob)
    make_answer(alice, model="kimi-k2", created_at=at(2, 10), prompt_tokens=100, completion_tokens=50,
                cached_tokens=20, cost=Decimal("1.5"))  # fmt: skip
    make_answer(bob, model="kimi-k2.5", created_at=at(2, 11), prompt_tokens=200, completion_tokens=100, cost=Decimal(2))
    make_answer(bob, model="kimi-k2", created_at=at(3), prompt_tokens=10, completion_tokens=5, cost=Decimal("0.25"))
    make_answer(carol, model="kimi-k2", created_at=at(3), status=Message.Status.ERROR, cost=Decimal(0))  # released
    dated(credits.grant(carol, 10, note='=HYPERLINK("x")'), at(4))
    dated(credits.adjust(alice, -5, created_by=None, note="correction"), at(4))
    make_answer(alice, model="kimi-k2", created_at=at(1, 12, month=4), prompt_tokens=999, cost=Decimal(9))
    return alice, bob, carol


def rows_of(name: str, start="2026-03-01", end="2026-03-31") -> list[list[str]]:
    text = "".join(reports.csv_chunks(reports.report_rows(name, reports.parse_range(start, end)), bom=False))
    return list(csv.reader(io.StringIO(text)))


USAGE = ["requests", "prompt_tokens", "cached_tokens", "completion_tokens", "credits_spent", "credits_added",
         "adjustments"]  # fmt: skip


def test_usage_per_user(ledger):
    alice, bob, carol = ledger
    assert rows_of("users") == [
        ["user", "user_id", *USAGE],
        ["alice", str(alice.pk), "1", "100", "20", "50", "1.500000", "0.000000", "-5.000000"],
        ["bob", str(bob.pk), "2", "210", "0", "105", "2.250000", "0.000000", "0.000000"],
        ["carol", str(carol.pk), "0", "0", "0", "0", "0.000000", "10.000000", "0.000000"],
    ]


def test_usage_per_group_counts_a_user_in_each_of_their_groups(ledger):
    assert rows_of("groups") == [
        ["group", *USAGE],
        ["ops", "2", "210", "0", "105", "2.250000", "0.000000", "0.000000"],
        ["team", "3", "310", "20", "155", "3.750000", "0.000000", "-5.000000"],
        ["(no group)", "0", "0", "0", "0", "0.000000", "10.000000", "0.000000"],
    ]


def test_usage_per_model_and_per_day(ledger):
    assert rows_of("models") == [
        ["model", *USAGE],
        [reports.NO_MODEL, "0", "0", "0", "0", "0.000000", "10.000000", "-5.000000"],
        ["kimi-k2", "2", "110", "20", "55", "1.750000", "0.000000", "0.000000"],
        ["kimi-k2.5", "1", "200", "0", "100", "2.000000", "0.000000", "0.000000"],
    ]
    assert rows_of("days") == [
        ["day", *USAGE],
        ["2026-03-02", "2", "300", "20", "150", "3.500000", "0.000000", "0.000000"],
        ["2026-03-03", "1", "10", "0", "5", "0.250000", "0.000000", "0.000000"],
        ["2026-03-04", "0", "0", "0", "0", "0.000000", "10.000000", "-5.000000"],
    ]
    assert rows_of("days", "2026-03-03", "2026-03-03")[1:] == [
        ["2026-03-03", "1", "10", "0", "5", "0.250000", "0.000000", "0.000000"]
    ]


def test_the_ledger_report_lists_every_row_of_the_range_formula_safe(ledger):
    rows = rows_of("ledger")
    assert rows[0][:6] == ["id", "created_at", "user", "kind", "amount", "balance_after"]
    body = [dict(zip(rows[0], r, strict=True)) for r in rows[1:]]
    assert [(r["user"], r["kind"], r["amount"]) for r in body] == [
        ("alice", "charge", "-1.500000"),
        ("bob", "charge", "-2.000000"),
        ("bob", "charge", "-0.250000"),
        ("carol", "charge", "-1.000000"),
        ("carol", "refund", "1.000000"),
        ("carol", "grant", "10.000000"),
        ("alice", "adjustment", "-5.000000"),
    ]
    assert body[5]["note"] == '\'=HYPERLINK("x")'  # a spreadsheet shows it as text, never runs it
    assert body[0]["created_at"] == "2026-03-02T10:00:00+00:00"


@pytest.mark.parametrize(
    ("start", "end", "field", "message"),
    [
        ("", "2026-03-01", "start", "Enter a date (YYYY-MM-DD)."),
        ("2026-02-30", "2026-03-01", "start", "“2026-02-30” is not a date: use YYYY-MM-DD."),
        ("20260301", "2026-03-01", "start", "“20260301” is not a date: use YYYY-MM-DD."),
        ("2026-03-01", "yesterday", "end", "“yesterday” is not a date: use YYYY-MM-DD."),
        ("2026-03-02", "2026-03-01", "end", "The last day is before the first."),
        ("2000-01-01", "2026-03-01", "end", "A report covers at most 3660 days."),
    ],
)
def test_dates_are_validated_with_clear_errors(start, end, field, message):
    with pytest.raises(reports.ReportError) as error:
        reports.parse_range(start, end)
    assert (error.value.field, str(error.value)) == (field, message)


def test_the_admin_page_downloads_a_csv_and_explains_bad_dates(ledger, admin_client):
    page = admin_client.get(REPORTS)
    assert page.status_code == 200 and b'id="kc-report-form"' in page.content
    response = admin_client.get(REPORTS, {"report": "users", **MARCH})
    assert response.status_code == 200 and response.streaming
    assert response["Content-Type"] == "text/csv; charset=utf-8"
    assert response["Content-Disposition"] == 'attachment; filename="kimichat-users-2026-03-01-2026-03-31.csv"'
    text = b"".join(response.streaming_content).decode()
    assert text.startswith("\ufeffuser,user_id,requests") and "alice," in text
    bad = admin_client.get(REPORTS, {"report": "users", "start": "2026-03-05", "end": "2026-03-01"})
    assert bad.status_code == 400 and "The last day is before the first." in bad.content.decode()
    bad = admin_client.get(REPORTS, {"report": "nope", **MARCH})
    assert bad.status_code == 400 and "Select a valid choice" in bad.content.decode()


def test_only_staff_with_the_ledgers_view_permission_may_export(ledger, make_user, client):
    alice = ledger[0]
    client.force_login(alice)  # not staff: the admin's login page
    response = client.get(REPORTS, {"report": "ledger", **MARCH})
    assert response.status_code == 302 and "/login/" in response["Location"]
    staff = make_user("helper", is_staff=True)
    client.force_login(staff)
    assert client.get(REPORTS, {"report": "ledger", **MARCH}).status_code == 403
    staff.user_permissions.add(Permission.objects.get(codename="view_credittransaction"))
    assert client.get(REPORTS, {"report": "ledger", **MARCH}).status_code == 200
    client.logout()
    assert client.get(REPORTS, {"report": "ledger", **MARCH}).status_code == 302


def test_the_command_writes_the_same_csv(ledger, tmp_path):
    out = tmp_path / "users.csv"
    call_command("exportreport", "users", "2026-03-01", "2026-03-31", "--output", str(out))
    assert list(csv.reader(out.open(encoding="utf-8"))) == rows_of("users")
    stdout = io.StringIO()
    call_command("exportreport", "days", "2026-03-01", "2026-03-31", stdout=stdout)
    assert list(csv.reader(io.StringIO(stdout.getvalue()))) == rows_of("days")
    with pytest.raises(CommandError, match="end: The last day is before the first."):
        call_command("exportreport", "users", "2026-03-31", "2026-03-01")
    with pytest.raises(CommandError, match="report: Choose one of: ledger, users"):
        call_command("exportreport", "everything", "2026-03-01", "2026-03-31")


# --- memory ---------------------------------------------------------------------------------------------------


def fill_ledger(user, count: int) -> None:
    account = CreditAccount.objects.get(user=user)
    CreditTransaction.objects.bulk_create(
        (
            CreditTransaction(
                account=account,
                kind="charge",
                amount=Decimal("-0.123456"),
                balance_after=Decimal("1000"),
                model="kimi-k2",
                state="settled",
                prompt_tokens=1234,
                completion_tokens=567,
                note=f"a ledger row's note, long enough to weigh something: {i}",
                created_at=at(1 + i % 28),
            )
            for i in range(count)
        ),
        batch_size=5000,
    )


def peak_while_streaming(name: str) -> tuple[int, int]:
    """(peak bytes allocated while the whole report is produced and thrown away, bytes produced)."""
    period = reports.parse_range("2026-03-01", "2026-03-31")
    tracemalloc.start()
    try:
        produced = sum(len(chunk) for chunk in reports.csv_chunks(reports.report_rows(name, period)))
        return tracemalloc.get_traced_memory()[1], produced
    finally:
        tracemalloc.stop()


def test_streaming_the_ledger_takes_the_same_memory_for_20k_and_100k_rows(owner):
    fill_ledger(owner, 20_000)
    small_peak, small_size = peak_while_streaming("ledger")
    fill_ledger(owner, 80_000)
    large_peak, large_size = peak_while_streaming("ledger")
    assert large_size > 4.5 * small_size  # five times the rows
    print(f"peak: {small_peak / 1e6:.1f} MB for 20k rows ({small_size / 1e6:.1f} MB of CSV), "
          f"{large_peak / 1e6:.1f} MB for 100k rows ({large_size / 1e6:.1f} MB)")  # fmt: skip
    assert large_peak < 12_000_000  # the CSV alone is ~20 MB
    assert large_peak < small_peak * 1.5 + 1_000_000  # independent of the row count


@pytest.mark.django_db(transaction=True)
async def test_through_the_asgi_handler_the_csv_arrives_in_many_chunks_in_bounded_memory(owner, make_user):
    """What daphne does: Django's ASGI handler sends the body as it is produced (a synchronous iterator would be
    read into a list first: the whole report in memory)."""
    from asgiref.sync import sync_to_async

    admin = await sync_to_async(make_user)("root", is_staff=True, is_superuser=True)
    await sync_to_async(fill_ledger)(owner, 60_000)
    client = Client()
    await sync_to_async(client.force_login)(admin)
    cookie = client.cookies[django_settings.SESSION_COOKIE_NAME].value
    app = get_asgi_application()
    scope = asgi.http_scope(
        REPORTS,
        {"cookie": f"{django_settings.SESSION_COOKIE_NAME}={cookie}"},
        query_string=b"report=ledger&start=2026-03-01&end=2026-03-31",
    )
    sizes = []

    def on_body(part):
        if part:
            sizes.append(len(part))

    tracemalloc.start()
    try:
        status, _headers, _body = await asgi.call(app, scope, on_body)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert status == 200
    assert sum(sizes) > 9_000_000  # 60,000 rows of CSV
    print(f"ASGI: peak {peak / 1e6:.1f} MB for {sum(sizes) / 1e6:.1f} MB of CSV")
    assert peak < 8_000_000, peak  # a synchronous iterator (read into a list first): 12.6 MB, growing with the rows
