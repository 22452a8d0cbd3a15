"""The operators' dashboard: its figures (conversations.admin.dashboard, at a fixed "now"), its chart geometry, the
page at /admin/dashboard/ with its permission, its query count, and a headless-Chromium screenshot."""

import re
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from django.contrib.auth.models import Permission
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from conversations.admin import dashboard as admin_dashboard
from conversations.admin.dashboard import DayUsage, bar_chart, format_number, nice_ceiling
from conversations.models import Conversation, Message, ProviderSnapshot
from tests.fixtures.credits import pay_for

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _fast_password_hashing(settings):
    """Argon2 makes each test user cost a noticeable fraction of a second; these tests are not about passwords."""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


DASHBOARD = reverse("admin:kimichat_dashboard")
NOW = datetime(2025, 3, 15, 12, 0, tzinfo=UTC)
ARTIFACTS = Path(__file__).parent / "artifacts"


def answer(conversation, at, *, tokens=0, cost="0", status="complete", error_code="", model="kimi-k2.6"):
    """An answer and its ledger rows (the figures come from the ledger)."""
    message = Message.objects.create(
        conversation=conversation,
        role="assistant",
        content="…",
        status=status,
        error_code=error_code,
        model=model,
        total_tokens=tokens,
        prompt_tokens=tokens // 2,
        completion_tokens=tokens - tokens // 2,
        cost=Decimal(cost),
        created_at=at,
    )
    if status not in ("pending", "streaming"):
        pay_for(message, cost=Decimal(cost))
    return message


@pytest.fixture
def seeded(owner, outsider):
    """Usage around NOW (2025-03-15 12:00 UTC); the comments give each row's effect on the figures."""
    mine = Conversation.objects.create(owner=owner, title="mine", model="kimi-k2.6")
    theirs = Conversation.objects.create(owner=outsider, title="theirs", model="kimi-k3")
    Message.objects.create(
        conversation=mine, role="user", content="q", created_at=NOW - timedelta(hours=1)
    )  # no request
    answer(mine, NOW - timedelta(hours=1), tokens=100, cost="1.5")  # today
    answer(mine, NOW - timedelta(hours=2), status="error", error_code="rate_limited")  # today, error
    answer(mine, NOW - timedelta(hours=3), status="error", error_code="rate_limited")  # today, error
    answer(theirs, NOW - timedelta(hours=5), status="error", error_code="upstream_timeout")  # today, error
    answer(theirs, NOW - timedelta(hours=1), tokens=50, cost="5", model="kimi-k3")  # today
    answer(mine, NOW - timedelta(hours=25), tokens=200, cost="2", status="error", error_code="rate_limited")  # Mar 14
    answer(mine, NOW - timedelta(days=29), tokens=7, cost="0.25")  # Feb 14: the window's first day
    answer(mine, NOW - timedelta(days=30), tokens=1000, cost="9")  # Feb 13: outside the window
    answer(theirs, NOW + timedelta(hours=1), tokens=1, cost="1")  # after NOW: not counted
    return {"mine": mine, "theirs": theirs}


# --- the figures -----------------------------------------------------------------------------------------------
def test_daily_usage_counts_answers_tokens_and_credits_per_day(seeded):
    days = admin_dashboard.daily_usage(now=NOW)
    assert len(days) == 30
    assert days[0].day == date(2025, 2, 14) and days[-1].day == date(2025, 3, 15)
    by_day = {d.day: d for d in days if d.requests}
    assert by_day == {
        date(2025, 2, 14): DayUsage(date(2025, 2, 14), requests=1, tokens=7, credits=Decimal("0.25")),
        date(2025, 3, 14): DayUsage(date(2025, 3, 14), requests=1, tokens=200, credits=Decimal(2)),
        # The three errors of today charged nothing (released): not requests. The error of Mar 14 was charged.
        date(2025, 3, 15): DayUsage(date(2025, 3, 15), requests=2, tokens=150, credits=Decimal("6.5")),
    }


def test_daily_usage_buckets_days_in_the_current_time_zone(owner):
    conversation = Conversation.objects.create(owner=owner, model="kimi-k2.6")
    answer(conversation, datetime(2025, 3, 14, 20, 0, tzinfo=UTC), tokens=5)  # Mar 15, 04:00 in Shanghai
    with timezone.override("Asia/Shanghai"):
        days = admin_dashboard.daily_usage(now=NOW)
    assert days[-1] == DayUsage(date(2025, 3, 15), requests=1, tokens=5)
    assert days[-2].requests == 0
    assert admin_dashboard.daily_usage(now=NOW)[-2].tokens == 5  # in UTC it was the 14th


def test_top_users_by_tokens_and_by_credits(seeded, owner, outsider):
    by_tokens = admin_dashboard.top_users_by_tokens(now=NOW)
    assert [(u.username, u.tokens, u.requests, u.credits) for u in by_tokens] == [
        ("owner", 307, 3, Decimal("3.75")),
        ("outsider", 50, 1, Decimal(5)),
    ]
    by_credits = admin_dashboard.top_users_by_credits(now=NOW)
    assert [(u.username, u.credits) for u in by_credits] == [("outsider", Decimal(5)), ("owner", Decimal("3.75"))]
    assert [u.username for u in admin_dashboard.top_users_by_tokens(now=NOW, limit=1)] == ["owner"]


def test_deleting_chats_leaves_the_spending_figures_as_they_were(seeded):
    before = admin_dashboard.dashboard_data(now=NOW)
    Conversation.objects.all().delete()
    after = admin_dashboard.dashboard_data(now=NOW)
    assert after.days == before.days and after.totals == before.totals
    assert after.top_by_credits == before.top_by_credits and after.top_by_tokens == before.top_by_tokens


def test_imported_answers_are_not_requests(owner):
    imported = Conversation.objects.create(owner=owner, model="gpt-4o", title="imported")
    for hours in range(5):  # as services/history/exports.py stores them: complete, no ledger row
        at = NOW - timedelta(hours=hours)
        Message.objects.create(conversation=imported, role="assistant", content="old", model="gpt-4o", created_at=at)
    data = admin_dashboard.dashboard_data(now=NOW)
    assert data.totals.requests == 0 and data.top_by_tokens == [] and data.top_by_credits == []


def test_errors_by_code_over_the_last_24_hours(seeded):
    errors = admin_dashboard.errors_by_code(now=NOW)
    # The rate_limited error 25 hours ago is outside the window.
    assert [(e.code, e.count, e.last_at) for e in errors] == [
        ("rate_limited", 2, NOW - timedelta(hours=2)),
        ("upstream_timeout", 1, NOW - timedelta(hours=5)),
    ]


def test_streams_in_progress_with_their_age(owner, settings):
    settings.KIMICHAT_GENERATION_TIME_LIMIT = 900
    conversation = Conversation.objects.create(owner=owner, model="kimi-k2.6")
    answer(conversation, NOW - timedelta(seconds=30), status="pending")
    old = answer(conversation, NOW - timedelta(minutes=20), status="streaming")
    answer(conversation, NOW - timedelta(minutes=50), status="complete")
    streams, more = admin_dashboard.streams_in_progress(now=NOW)
    assert [(s.message_id, s.status, s.age, s.stale, s.username) for s in streams] == [
        (old.pk, "streaming", timedelta(minutes=20), True, "owner"),
        (streams[1].message_id, "pending", timedelta(seconds=30), False, "owner"),
    ]
    assert [s.age_display for s in streams] == ["20 min 0 s", "30 s"]
    assert not more
    assert admin_dashboard.streams_in_progress(now=NOW, limit=1) == ([streams[0]], True)


def test_latest_provider_snapshot():
    assert admin_dashboard.latest_provider_snapshot() is None
    ProviderSnapshot.objects.create(balance=Decimal(5), recorded_at=NOW - timedelta(hours=2))
    newest = ProviderSnapshot.objects.create(balance=Decimal(3), recorded_at=NOW)
    assert admin_dashboard.latest_provider_snapshot() == newest


def test_dashboard_data_totals_and_constant_query_count(seeded, owner, django_assert_num_queries):
    # daily usage, top by tokens, top by credits, errors, streams, provider snapshot, provider balance
    with django_assert_num_queries(8):
        data = admin_dashboard.dashboard_data(now=NOW)
    assert (data.totals.requests, data.totals.tokens, data.totals.credits) == (4, 357, Decimal("8.75"))
    assert data.today.requests == 2 and data.error_total == 3
    for index in range(150):  # many more rows, users and streams: still eight queries
        user = type(owner).objects.create(username=f"u{index}")
        conversation = Conversation.objects.create(owner=user, model="kimi-k2.6")
        answer(  # charged although it failed mid-stream: one request each
            conversation, NOW - timedelta(hours=index % 40), tokens=index, cost="0.01", status="error", error_code="e"
        )
        answer(conversation, NOW - timedelta(minutes=index), status="streaming")
    with django_assert_num_queries(8):
        data = admin_dashboard.dashboard_data(now=NOW)
    assert len(data.top_by_tokens) == 10 and len(data.streams) == 50 and data.streams_more


# --- the chart -------------------------------------------------------------------------------------------------
def days_with(values):
    first = date(2025, 2, 14)
    return [DayUsage(first + timedelta(days=i), requests=v) for i, v in enumerate(values)]


def test_bar_chart_geometry():
    values = [0] * 28 + [5, 10]
    chart = bar_chart(days_with(values), "requests", title="Requests")
    plot_height = chart.plot_bottom - chart.plot_top
    assert len(chart.bars) == 30
    tallest, half, empty = chart.bars[-1], chart.bars[-2], chart.bars[0]
    assert (tallest.y, tallest.height) == (chart.plot_top, plot_height)  # 10 is the axis top
    assert half.height == plot_height / 2 and half.y == chart.plot_bottom - plot_height / 2
    assert empty.height == 0 and empty.y == chart.plot_bottom
    assert [t.label for t in chart.y_ticks] == ["0", "5", "10"]
    # Every fifth day, counted back from the last, is labelled.
    assert [t.label for t in chart.x_ticks] == ["Feb 18", "Feb 23", "Feb 28", "Mar 5", "Mar 10", "Mar 15"]
    assert [t.anchor for t in chart.x_ticks] == ["middle"] * 5 + ["end"]
    assert chart.x_ticks[-1].x == chart.plot_right  # the last label ends inside the chart
    assert tallest.label == "Mar 15: 10 requests" and chart.total == "15"
    xs = [b.x for b in chart.bars]
    assert xs == sorted(xs) and chart.bars[0].x >= chart.plot_left and xs[-1] + tallest.width <= chart.plot_right


def test_bar_chart_keeps_a_tiny_day_visible_and_handles_no_data():
    chart = bar_chart(days_with([1] + [0] * 28 + [1000]), "requests", title="r")
    assert chart.bars[0].height == 1.0
    empty = bar_chart(days_with([0] * 30), "requests", title="r")
    assert {b.height for b in empty.bars} == {0} and [t.label for t in empty.y_ticks] == ["0", "0.5", "1"]


@pytest.mark.parametrize(
    ("value", "ceiling"), [(0, 1), (1, 1), (7, 10), (12, 20), (230, 250), (0.004, 0.005), (5000, 5000)]
)
def test_nice_ceiling(value, ceiling):
    assert nice_ceiling(value) == pytest.approx(ceiling)


@pytest.mark.parametrize(
    ("value", "text"),
    [(0, "0"), (950, "950"), (1234, "1.23k"), (2_500_000, "2.5M"), (Decimal("0.25"), "0.25"), (Decimal("1.5"), "1.5")],
)
def test_format_number(value, text):
    assert format_number(value) == text


# --- the page --------------------------------------------------------------------------------------------------
@pytest.fixture
def live_data(owner, outsider):
    """Rows created just now, so the page (which uses the real clock) counts them as today's."""
    now = timezone.now()
    mine = Conversation.objects.create(owner=owner, title="mine", model="kimi-k2.6")
    theirs = Conversation.objects.create(owner=outsider, title="theirs", model="kimi-k3")
    answer(mine, now, tokens=1200, cost="0.75")
    answer(mine, now, tokens=34, cost="0.25")
    answer(theirs, now, status="error", error_code="rate_limited")
    stream = answer(theirs, now - timedelta(seconds=1), status="streaming")
    ProviderSnapshot.objects.create(
        balance=Decimal("1234.5"),
        credits_remaining="987",
        rate_limit={"x-ratelimit-remaining-requests": "57", "x-ratelimit-limit-requests": "60"},
        source="headers",
    )
    return {"stream": stream, "today": timezone.localdate(now)}


def grant(user, codename, app_label="conversations"):
    user.user_permissions.add(Permission.objects.get(codename=codename, content_type__app_label=app_label))


@pytest.fixture
def staff(make_user):
    return make_user("staff", is_staff=True)


def test_dashboard_shows_the_figures_of_the_data(admin_client, live_data):
    response = admin_client.get(DASHBOARD)
    assert response.status_code == 200
    data = response.context["data"]
    if data.today.day != live_data["today"]:
        pytest.skip("the day changed between seeding and rendering")
    assert (data.today.requests, data.today.tokens, data.today.credits) == (2, 1234, Decimal(1))
    html = response.content.decode()
    assert 'id="kc-today-requests">2<' in html
    assert 'id="kc-today-tokens">1,234<' in html
    assert 'id="kc-today-credits">1.00<' in html
    assert 'id="kc-errors-24h">1<' in html
    assert 'id="kc-streams-now">1<' in html
    assert 'id="kc-provider-balance">1,234.50<' in html
    assert "x-ratelimit-remaining-requests" in html and ">57<" in html and ">987<" in html
    top = re.search(r'<table id="kc-top-tokens">.*?</table>', html, re.S).group(0)
    assert top.index(">owner<") < top.index("1,234")
    assert "rate_limited" in re.search(r'<table id="kc-errors">.*?</table>', html, re.S).group(0)
    streams = re.search(r'<table id="kc-streams">.*?</table>', html, re.S).group(0)
    assert reverse("admin:conversations_message_change", args=[live_data["stream"].pk]) in streams
    assert "outsider" in streams and "streaming" in streams


def test_dashboard_chart_is_inline_svg_without_external_scripts(admin_client, live_data):
    html = admin_client.get(DASHBOARD).content.decode()
    figures = re.findall(r'<figure class="kc-chart">.*?</figure>', html, re.S)
    assert len(figures) == 3 and all('<svg viewBox="0 0 420 170" role="img"' in f for f in figures)
    assert html.count('<rect class="kc-bar"') == 90
    assert "Requests per day" in html and "Tokens per day" in html and "Credits spent per day" in html
    scripts = re.findall(r'<script[^>]*src="([^"]+)"', html)
    assert all(src.startswith("/static/admin/") for src in scripts), scripts
    stylesheets = re.findall(r'<link[^>]*href="([^"]+)"', html)
    assert "/static/css/admin-dashboard.css" in stylesheets
    assert all(href.startswith("/static/") for href in stylesheets), stylesheets


def test_dashboard_needs_staff_and_the_ledger_view_permission(client, staff, live_data):
    assert client.get(DASHBOARD).status_code == 302  # anonymous: to a login page
    client.force_login(staff)
    assert client.get(DASHBOARD).status_code == 403
    assert "kimichat-dashboard-link" not in client.get(reverse("admin:index")).content.decode()

    grant(staff, "view_credittransaction")
    staff.refresh_from_db()
    client.force_login(staff)
    response = client.get(DASHBOARD)
    assert response.status_code == 200
    html = response.content.decode()
    # The figures, but no links into message content without view_message.
    assert 'id="kc-streams-now">1<' in html
    assert reverse("admin:conversations_message_changelist") not in html
    assert f"#{live_data['stream'].pk}" in html
    index = client.get(reverse("admin:index")).content.decode()
    assert 'id="kimichat-dashboard-link"' in index and DASHBOARD in index


def test_admin_index_links_to_the_dashboard(admin_client):
    html = admin_client.get(reverse("admin:index")).content.decode()
    assert 'id="kimichat-dashboard-link"' in html and f'href="{DASHBOARD}"' in html


def test_empty_dashboard_renders(admin_client):
    response = admin_client.get(DASHBOARD)
    assert response.status_code == 200
    html = response.content.decode()
    assert "Nothing is streaming." in html and "No provider snapshot recorded yet." in html
    assert 'id="kc-today-requests">0<' in html


def test_dashboard_page_query_count_is_constant(admin_client, owner, django_user_model):
    def seed(start, n):
        for index in range(start, start + n):
            user = django_user_model.objects.create(username=f"u{index}")
            conversation = Conversation.objects.create(owner=user, model="kimi-k2.6")
            answer(conversation, timezone.now() - timedelta(days=index % 35), tokens=index, cost="0.1")
            answer(conversation, timezone.now(), status="error", error_code=f"code{index % 9}")
            answer(conversation, timezone.now(), status="streaming")

    def count():
        with CaptureQueriesContext(connection) as context:
            assert admin_client.get(DASHBOARD).status_code == 200
        return len(context.captured_queries)

    seed(0, 10)
    few = count()
    seed(10, 110)
    ProviderSnapshot.objects.create(balance=Decimal(1), rate_limit={"a": 1})
    # session + user, then the eight figures' queries
    assert few == count() == 10


# --- the screenshot --------------------------------------------------------------------------------------------
@pytest.mark.browser
def test_dashboard_screenshot(monkeypatch, live_server, transactional_db, client, admin_user, owner, outsider):
    """Real Chromium renders the page: the charts have bars, nothing overflows; the PNG is kept for a human look."""
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")  # Playwright's sync API runs an event loop here
    from playwright.sync_api import sync_playwright

    now = timezone.now()
    for user, scale in [(owner, 3), (outsider, 1)]:
        conversation = Conversation.objects.create(owner=user, title="chart", model="kimi-k2.6")
        for day in range(30):
            for _ in range(1 + (day * scale) % 4):
                answer(conversation, now - timedelta(days=day), tokens=500 + 40 * day * scale, cost="0.35")
        answer(conversation, now - timedelta(hours=2), status="error", error_code="rate_limited")
        answer(conversation, now - timedelta(seconds=40 * scale), status="streaming")
    answer(conversation, now - timedelta(hours=3), status="error", error_code="upstream_timeout")
    ProviderSnapshot.objects.create(
        balance=Decimal("4821.37"),
        credits_remaining="4821.37",
        rate_limit={"x-ratelimit-limit-requests": "500", "x-ratelimit-remaining-requests": "498"},
        source="headers",
    )
    client.force_login(admin_user)
    session = client.cookies["sessionid"].value
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / "admin-dashboard.png"

    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path="/usr/bin/chromium",
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
            ],
        )
        try:
            context = browser.new_context(viewport={"width": 1400, "height": 900})
            context.add_cookies([{"name": "sessionid", "value": session, "url": live_server.url}])
            page = context.new_page()
            failed = []
            page.on("requestfailed", lambda request: failed.append(request.url))
            response = page.goto(live_server.url + DASHBOARD)
            assert response.status == 200
            assert page.locator("#kc-streams-now").inner_text() == "2"
            assert page.locator("rect.kc-bar").count() == 90
            # The bars are drawn: the tallest bar of each chart has a real height on screen.
            tallest_bars = """figures => figures.map(figure => Math.max(
                ...[...figure.querySelectorAll('rect')].map(rect => rect.getBoundingClientRect().height)))"""
            heights = page.eval_on_selector_all("figure.kc-chart", tallest_bars)
            assert len(heights) == 3 and min(heights) > 50, heights
            assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")  # no sideways scroll
            assert page.evaluate("getComputedStyle(document.querySelector('rect.kc-bar')).fill") != "rgb(0, 0, 0)"
            page.screenshot(path=str(path), full_page=True)
            assert not failed, failed
        finally:
            browser.close()
    assert path.stat().st_size > 10_000


@pytest.mark.parametrize(("language", "text"), [("en", "Nov 1"), ("zh-hans", "11月1日")])
def test_short_day_follows_the_language(language, text):
    from django.utils import translation

    from conversations.admin.dashboard import short_day

    with translation.override(language):
        assert short_day(date(2026, 11, 1)) == text


def test_dashboard_shows_the_rate_limit_reset_as_a_time(admin_client, settings):
    settings.TIME_ZONE = "UTC"
    recorded = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)
    # A small reset value is seconds from when the headers came (the same reading as the client's retry wait).
    ProviderSnapshot.objects.create(rate_limit={"x-ratelimit-reset": "90"}, source="headers", recorded_at=recorded)
    html = admin_client.get(DASHBOARD).content.decode()
    assert '<time datetime="2026-11-01T12:01:30+00:00"' in html
    assert ">90<" not in html
