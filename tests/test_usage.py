"""The usage page and /api/usage/: what they show, to whom, in how many queries; and a look in real Chromium."""

from __future__ import annotations

import os
import re
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import orjson
import pytest
from django.utils import timezone

from conversations.kimi.events import Usage
from conversations.models import Conversation, CreditTransaction, Message, ProviderSnapshot
from conversations.services.billing import credits, pricing, ratelimit
from conversations.services.billing.charts import bar_chart, nice_ceiling
from conversations.services.billing.usage import summary_to_dict, usage_summary

D = Decimal
NOW = datetime(2025, 9, 10, 15, 40, tzinfo=UTC)
ARTIFACTS = Path(__file__).parent / "artifacts"
# session, user, then services.usage: account + consumed, per day, per hour, per model, recent ledger rows, prices.
API_QUERIES = 8
# The page adds the spending caps: the user's, their groups' (services/billing/budgets.py; spending when one applies),
# and the user's preferences (the theme and chat width base.html puts on <html>).
PAGE_QUERIES = API_QUERIES + 3
BANNER = 1  # pages only (not the API): the staff's current announcement not dismissed by the user (base.html)


def spend(user, answer, usage: Usage, *, model: str = "kimi-k2"):
    """An answer paid for through the ledger, as the generation service does it."""
    reservation = credits.reserve(user, model=model, prompt_tokens=usage.prompt_tokens, max_completion_tokens=8192)
    credits.settle(reservation, message=answer, usage=usage, estimated=False)
    CreditTransaction.objects.filter(message=answer).update(created_at=answer.created_at)  # when it was answered


@pytest.fixture
def history(owner, outsider, make_answer):
    """The owner's answers in several days, hours and models; one failed; the outsider's answers."""
    make_answer(
        owner, created_at=NOW - timedelta(minutes=5), prompt_tokens=1000, completion_tokens=200, cached_tokens=300
    )
    make_answer(owner, created_at=NOW - timedelta(minutes=20), prompt_tokens=500, completion_tokens=100)
    make_answer(owner, created_at=NOW - timedelta(hours=3), prompt_tokens=50, completion_tokens=50, model="kimi-k2.6")
    make_answer(owner, created_at=NOW - timedelta(days=2), prompt_tokens=10, completion_tokens=10)
    make_answer(owner, created_at=NOW - timedelta(days=45), prompt_tokens=7, completion_tokens=3)  # too old for charts
    make_answer(owner, created_at=NOW - timedelta(minutes=1), status=Message.Status.ERROR, prompt_tokens=999, cost=D(0))
    make_answer(outsider, created_at=NOW - timedelta(minutes=1), prompt_tokens=123_456, model="secret-model")


# --- the numbers ----------------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_summary_buckets_answers_by_day_and_hour(owner, history):
    summary = usage_summary(owner, now=NOW)
    assert len(summary.daily) == 30 and len(summary.hourly) == 48
    assert summary.daily[-1].start == NOW.date() and summary.hourly[-1].start == NOW.replace(minute=0)
    today, two_days_ago = summary.daily[-1], summary.daily[-3]
    assert (today.requests, today.prompt_tokens, today.completion_tokens, today.cached_tokens) == (3, 1550, 350, 300)
    assert (two_days_ago.requests, two_days_ago.prompt_tokens) == (1, 10)
    assert sum(b.requests for b in summary.daily) == 4  # the 45-day-old answer and the failed one left out
    this_hour, three_hours_ago = summary.hourly[-1], summary.hourly[-4]
    assert (this_hour.requests, this_hour.tokens) == (2, 1800)
    assert (three_hours_ago.requests, three_hours_ago.tokens) == (1, 100)
    assert sum(b.requests for b in summary.hourly) == 3


@pytest.mark.django_db
def test_summary_totals_per_model_all_time(owner, history):
    summary = usage_summary(owner, now=NOW)
    assert [(m.model, m.requests, m.tokens, m.cost) for m in summary.models] == [
        ("kimi-k2", 4, 1830, D(4)),
        ("kimi-k2.6", 1, 100, D(1)),
    ]
    assert (summary.requests, summary.tokens, summary.cached_tokens) == (5, 1930, 300)
    assert summary.average_tokens_per_request == 386
    assert summary.provider is None  # not staff


@pytest.mark.django_db
def test_consumed_is_charges_less_refunds(owner, placeholder):
    failed = credits.reserve(owner, model="kimi-k2", prompt_tokens=1, max_completion_tokens=1)
    credits.release(failed, note="upstream 500")  # refunded: costs nothing
    spend(owner, placeholder, Usage(10, 10, 20))
    summary = usage_summary(owner)
    assert (summary.balance, summary.consumed) == (D(99), D(1))


@pytest.mark.django_db
def test_the_user_sees_what_answers_cost_not_reservations_and_releases(owner, placeholder, make_answer):
    pricing.set_price("kimi-k2", per_request="1", per_million_completion="1000")
    failed = credits.reserve(owner, model="kimi-k2", prompt_tokens=1, max_completion_tokens=1)
    credits.release(failed, note="model_not_found")
    spend(owner, placeholder, Usage(10, 10, 20))  # reserved 9.192 credits, settled for 1.01
    running = make_answer(owner, status=Message.Status.STREAMING, cost=D(0))
    credits.reserve(owner, model="kimi-k2", prompt_tokens=1, max_completion_tokens=1000, message=running)
    credits.grant(owner, D(5), note="top-up")
    summary = usage_summary(owner)
    shown = [(t.kind, t.amount, t.balance_after) for t in summary.transactions]
    assert shown == [
        ("grant", D(5), D("101.990000")),  # the running answer's reservation (2 credits) is held
        ("charge", D("-1.010000"), D("98.990000")),
        ("signup_bonus", D(100), D(100)),
    ]
    notes = " ".join(t.note for t in summary.transactions)
    assert "released" not in notes and "reserv" not in notes and "model_not_found" not in notes
    data = summary_to_dict(summary)
    assert [t["amount"] for t in data["transactions"]] == ["5.000000", "-1.010000", "100.000000"]


@pytest.mark.django_db
def test_usage_counts_what_was_answered_here_not_imported_messages(owner, owner_client):
    from conversations.services.history.exports import import_conversations

    chat = {
        "format": "kimichat.conversation.v1",
        "conversation": {"title": "from elsewhere", "model": "gpt-4o"},
        "messages": [
            {"role": "user", "content": "hi"},
            {"role": "assistant", "content": "hello", "model": "gpt-4o", "created_at": "2025-01-02T03:04:05Z"},
        ],
    }
    import_conversations(owner, orjson.dumps([chat] * 20))
    assert Message.objects.for_user(owner).filter(role="assistant").count() == 20
    data = owner_client.get("/api/usage/").json()
    assert data["requests"] == 0 and data["models"] == []
    assert all(b["requests"] == 0 for b in data["daily"])


@pytest.mark.django_db
def test_a_charged_answer_that_failed_mid_stream_is_one_request(owner, placeholder):
    reservation = credits.reserve(owner, model="kimi-k2", prompt_tokens=10, max_completion_tokens=100)
    Message.objects.filter(pk=placeholder.pk).update(status=Message.Status.ERROR)
    credits.settle(reservation, message=placeholder, usage=Usage(10, 40, 50), estimated=False)
    summary = usage_summary(owner)
    assert (summary.requests, summary.tokens) == (1, 50)


@pytest.mark.django_db
def test_deleting_conversations_leaves_spending_and_requests_as_they_were(owner, make_answer):
    for _ in range(3):
        make_answer(owner, prompt_tokens=10, completion_tokens=5, cost=D("1.5"))
    before = usage_summary(owner)
    Conversation.objects.filter(owner=owner).delete()
    after = usage_summary(owner)
    assert (after.requests, after.tokens, after.consumed) == (before.requests, before.tokens, before.consumed)
    assert (after.requests, after.tokens, after.consumed) == (3, 45, D("4.5"))
    assert [(m.model, m.requests, m.cost) for m in after.models] == [("kimi-k2", 3, D("4.5"))]


@pytest.mark.django_db
def test_a_user_without_an_account_sees_zeros(owner):
    owner.credit_account.delete()
    summary = usage_summary(owner)
    assert (summary.balance, summary.consumed, summary.requests, summary.transactions) == (0, 0, 0, [])


# --- the page and the API -------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_the_usage_page_needs_a_login(client):
    response = client.get("/usage/")
    assert response.status_code == 302 and response["Location"].startswith("/accounts/login/")
    assert client.get("/api/usage/").status_code == 401


@pytest.mark.django_db
def test_the_usage_page_shows_the_users_numbers_only(owner_client, owner, make_answer, django_assert_num_queries):
    answer = make_answer(owner, status=Message.Status.STREAMING, cost=D(0))
    spend(owner, answer, Usage(1200, 345, 1545, 200))
    credits.grant(owner, "2.5", note="birthday present")
    ProviderSnapshot.objects.create(balance=D("12.34"), rate_limit={"x-ratelimit-limit": "60"})
    with django_assert_num_queries(PAGE_QUERIES + BANNER):
        response = owner_client.get("/usage/")
    html = response.content.decode()
    assert response.status_code == 200
    assert 'data-testid="balance">101.50<' in html
    assert 'data-testid="consumed">1.00<' in html
    assert 'data-testid="average">1,545<' in html
    assert 'data-testid="cached">200<' in html and "cached (17% of prompt)" in html
    assert html.count("<svg") == 4 and "<script" not in html
    assert "birthday present" in html and "+2.50" in html
    assert "<code>kimi-k2</code>" in html
    assert "css/usage.css" in html
    assert "x-ratelimit-limit" not in html and "Provider account" not in html  # staff only


@pytest.mark.django_db
def test_the_usage_page_shows_the_price_of_each_model(owner_client, shipped_prices, settings):
    settings.KIMI_FALLBACK_MODELS = ["kimi-k2.5", "kimi-k3"]
    pricing.set_price("kimi-k3", per_request="2", per_million_prompt="400", per_million_completion="1600")
    html = owner_client.get("/usage/").content.decode()
    prices = html[html.index('id="prices"') :]
    # kimi-k2.5 at Moonshot's US$0.60 / 0.10 / 3.00 a million, 1 credit = US$0.01; kimi-k3 as set in the admin.
    assert re.search(
        r"<code>kimi-k2.5</code></td><td class=\"num\">1.00</td>\s*<td class=\"num\">60.00</td>"
        r"<td class=\"num\">10.00</td>\s*<td class=\"num\">300.00</td>",
        prices,
    )
    assert re.search(r"<code>kimi-k3</code></td><td class=\"num\">2.00</td>\s*<td class=\"num\">400.00</td>", prices)
    data = owner_client.get("/api/usage/").json()
    assert data["prices"][0] == {
        "model": "kimi-k2.5",
        "per_request": "1.000000",
        "per_million_prompt": "60.000000",
        "per_million_cached": "10.000000",
        "per_million_completion": "300.000000",
    }


@pytest.mark.django_db
def test_staff_also_see_the_provider_snapshot(make_user, client, django_assert_num_queries):
    admin = make_user("admin", is_staff=True)
    ProviderSnapshot.objects.create(balance=D("12.34"), rate_limit={"X-RateLimit-Remaining": "59"}, source="headers")
    client.force_login(admin)
    with django_assert_num_queries(PAGE_QUERIES + BANNER + 1):  # + the latest provider snapshot
        html = client.get("/usage/").content.decode()
    assert "Provider account" in html and "12.34" in html and "X-RateLimit-Remaining" in html
    with django_assert_num_queries(API_QUERIES + 1):
        data = client.get("/api/usage/").json()
    assert data["provider"]["balance"] == "12.340000"


@pytest.mark.django_db
def test_the_query_count_does_not_grow_with_history(owner_client, owner, make_answer, django_assert_num_queries):
    for i in range(40):
        at = timezone.now() - timedelta(hours=i * 7)
        answer = make_answer(owner, created_at=at, model=f"m{i % 5}", cost=D(0), status=Message.Status.STREAMING)
        spend(owner, answer, Usage(100, 20, 120), model=answer.model)
    with django_assert_num_queries(PAGE_QUERIES + BANNER):
        assert owner_client.get("/usage/").status_code == 200
    with django_assert_num_queries(API_QUERIES):
        assert owner_client.get("/api/usage/").status_code == 200


@pytest.mark.django_db
def test_the_usage_api(owner_client, owner, make_answer, outsider):
    answer = make_answer(owner, cost=D(0), status=Message.Status.STREAMING)
    spend(owner, answer, Usage(1000, 500, 1500, 400))
    make_answer(outsider, model="secret-model", prompt_tokens=5)
    ratelimit.check_rate_limit(owner, D(99))
    data = owner_client.get("/api/usage/").json()
    assert (data["balance"], data["consumed"], data["requests"]) == ("99.000000", "1.000000", 1)
    assert data["tokens"] == {"prompt": 1000, "completion": 500, "cached": 400, "total": 1500}
    assert data["average_tokens_per_request"] == 1500
    assert [m["model"] for m in data["models"]] == ["kimi-k2"]
    assert len(data["daily"]) == 30 and data["daily"][-1]["requests"] == 1
    assert len(data["hourly"]) == 48 and data["hourly"][-1]["prompt_tokens"] == 1000
    assert [t["kind"] for t in data["transactions"]] == ["charge", "signup_bonus"]
    assert data["rate_limits"][0] == {
        "window": "minute",
        "limit": 20,
        "used": 1,
        "resets_in": data["rate_limits"][0]["resets_in"],
    }
    assert "provider" not in data
    assert owner_client.post("/api/usage/").status_code == 405


# --- presentation helpers -------------------------------------------------------------------------------------


@pytest.mark.parametrize(("value", "expected"), [(0, 1), (1, 1), (3, 5), (7, 10), (11, 20), (180, 200), (2_001, 5_000)])
def test_nice_ceiling(value, expected):
    assert nice_ceiling(value) == expected


def test_bar_heights_are_proportional_and_stack():
    chart = bar_chart([("a", [("p", 10), ("c", 30)], "A"), ("b", [("p", 20)], "B"), ("c", [], "C")], label_every=2)
    (p1, c1), (p2,), () = (bar.segments for bar in chart.bars)
    assert c1.height == pytest.approx(3 * p1.height) and p2.height == pytest.approx(2 * p1.height)
    assert c1.y + c1.height == pytest.approx(p1.y)  # stacked: the second segment sits on the first
    assert p1.y + p1.height == pytest.approx(chart.plot_bottom)
    assert [label for _, label in chart.x_labels] == ["a", "c"]
    assert [label for _, label in chart.grid] == ["0", "10", "20", "30", "40", "50"]
    assert not chart.empty and bar_chart([("a", [("p", 0)], "")], label_every=1).empty


@pytest.mark.parametrize(
    ("highest", "labels"),
    [
        (1, ["0", "1"]),
        (2, ["0", "1", "2"]),
        (4, ["0", "1", "2", "3", "4", "5"]),
        (15_000, ["0", "5k", "10k", "15k", "20k"]),
    ],
)
def test_grid_labels_are_round_numbers(highest, labels):
    chart = bar_chart([("a", [("p", highest)], "")], label_every=1)
    assert [label for _, label in chart.grid] == labels


# --- in a real browser ----------------------------------------------------------------------------------------


@pytest.mark.browser
@pytest.mark.django_db(transaction=True)
def test_usage_page_screenshots(live_server, client, make_user, make_answer, monkeypatch):
    if not Path("/usr/bin/chromium").exists():
        pytest.skip("needs /usr/bin/chromium (apt-get install chromium)")
    # Playwright's sync API runs an event loop in this thread, which trips Django's async-safety check.
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    from playwright.sync_api import sync_playwright

    admin = make_user("screenshot", is_staff=True)
    credits.grant(admin, "500", note="starter pack")
    now = timezone.now()
    for i in range(120):  # a plausible month: busier on weekdays, a few answers an hour today
        when = now - timedelta(hours=(i * 37) % (30 * 24), minutes=i % 50)
        model = ("kimi-k2", "kimi-k2.6", "kimi-k2-thinking")[i % 3]
        answer = make_answer(admin, created_at=when, model=model, cost=D(0), status=Message.Status.STREAMING)
        usage = Usage(800 + (i * 97) % 3000, 150 + (i * 53) % 900, 0, cached_tokens=(i * 41) % 600)
        spend(admin, answer, usage, model=model)
    ProviderSnapshot.objects.create(
        balance=D("842.5"),
        credits_remaining="4523",
        rate_limit={"X-RateLimit-Limit": "60", "X-RateLimit-Remaining": "59"},
    )
    client.force_login(admin)
    session = client.cookies["sessionid"].value
    ARTIFACTS.mkdir(exist_ok=True)

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
            for scheme, width in (("light", 1280), ("dark", 1280), ("light", 390)):
                context = browser.new_context(viewport={"width": width, "height": 900}, color_scheme=scheme)
                context.add_cookies([{"name": "sessionid", "value": session, "url": live_server.url}])
                page = context.new_page()
                errors = []
                # Every resource the page asks for loads (the favicon is the base template's business).
                page.on(
                    "response",
                    lambda r, errors=errors: (
                        errors.append(f"{r.status} {r.url}")
                        if r.status >= 400 and not r.url.endswith("/favicon.ico")
                        else None
                    ),
                )
                page.on("pageerror", lambda e, errors=errors: errors.append(str(e)))
                response = page.goto(f"{live_server.url}/usage/")
                assert response.status == 200
                page.screenshot(path=str(ARTIFACTS / f"usage-{scheme}-{width}.png"), full_page=True)
                assert page.locator("svg.usage-chart").count() == 4
                assert page.locator("svg.usage-chart rect.bar-requests").count() > 10
                # The stylesheet loaded: the chart bars are coloured, not the SVG default black.
                fill = page.eval_on_selector("svg.usage-chart rect.bar-requests", "e => getComputedStyle(e).fill")
                assert fill not in ("rgb(0, 0, 0)", "")
                overflow = page.evaluate("document.documentElement.scrollWidth - document.documentElement.clientWidth")
                assert overflow <= 0, f"the page scrolls sideways by {overflow}px at {width}px"
                assert errors == []
                context.close()
        finally:
            browser.close()
    assert os.path.getsize(ARTIFACTS / "usage-dark-1280.png") > 10_000


@pytest.mark.parametrize(
    ("language", "label", "title_start"), [("en", "Nov 1", "Nov. 1, 2026"), ("zh-hans", "11月1日", "2026年11月1日")]
)
def test_chart_dates_follow_the_language(language, label, title_start):
    from django.utils import translation

    from conversations.services.billing.charts import usage_charts
    from conversations.services.billing.usage import Bucket

    daily = [Bucket(start=datetime(2026, 11, 1, tzinfo=UTC).date(), requests=2)]
    with translation.override(language):
        chart = usage_charts(daily, [])["daily_requests"]
    assert [text for _, text in chart.x_labels] == [label]
    assert chart.bars[0].title.startswith(title_start), chart.bars[0].title


def test_rate_limit_reset_shows_as_a_time_not_an_epoch(make_user, client, settings):
    settings.TIME_ZONE = "UTC"
    admin = make_user("admin", is_staff=True)
    ProviderSnapshot.objects.create(
        rate_limit={"X-RateLimit-Reset": "1793491200", "X-RateLimit-Remaining": "59"}, source="headers"
    )  # 1793491200 is 2026-11-01 00:00 UTC
    client.force_login(admin)
    html = client.get("/usage/").content.decode()
    assert '<time datetime="2026-11-01T00:00:00+00:00"' in html
    assert ">1793491200<" not in html and ">59<" in html
