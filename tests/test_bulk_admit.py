"""The user API's requests that wait together are admitted together (services/apikeys/bulk_admit.py), with
``metering.admit``'s rules, and the mechanism both burst paths share (services/batching.py).

Each equivalence test builds the same situation twice, for two sets of users: one set's requests go through
``common._admit_many`` as one batch, the other's one by one through ``common._admit`` (the path a lone request
takes). What they reserve and what they refuse must be the same. Real database, real cache."""

from __future__ import annotations

import asyncio
import contextvars
import time
from decimal import Decimal
from types import SimpleNamespace

import pytest
from django.contrib.auth.models import Group
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone, translation

from conversations.api_v1 import common
from conversations.kimi.params import ChatRequest
from conversations.models import AccountSignup, ApiKey, CreditAccount, CreditTransaction, GroupPolicy, UserBudget
from conversations.services import batching
from conversations.services.accounts import model_access
from conversations.services.apikeys import keys, metering
from conversations.services.billing import credits, ratelimit

pytestmark = pytest.mark.django_db

MODEL = "kimi-k2.6"
OTHER = "moonshot-v1-8k"
LEDGER_FIELDS = ("kind", "amount", "balance_after", "note", "model", "state", "estimated", "prompt_tokens")


@pytest.fixture(autouse=True)
def frozen_rate_limit_clock(monkeypatch):
    """A rate-limit refusal and the headers say how many seconds are left in the minute: both sets are admitted at
    the same instant of the same window."""
    frozen = time.time() // 60 * 60 + 1
    monkeypatch.setattr(ratelimit, "time", SimpleNamespace(time=lambda: frozen))
    monkeypatch.setattr(metering, "time", SimpleNamespace(time=lambda: frozen))


@pytest.fixture
def users(make_user):
    def make(prefix: str, count: int):
        return [make_user(f"{prefix}{n}") for n in range(count)]

    return make


def _request(user, content="Hello", *, model=MODEL, max_tokens=1024, spending_cap=None):
    key = ApiKey.objects.get(pk=keys.create(user, name="script", spending_cap=spending_cap).key.pk)
    request = ChatRequest(model=model, messages=[{"role": "user", "content": content}])
    request.max_tokens = max_tokens
    return key, user, common.Prepared(request=request, prompt_tokens=len(content) // 4 + 5)


def _one_by_one(waiting) -> list:
    outcomes = []
    for key, user, prepared in waiting:
        try:
            outcomes.append(common._admit(key.pk, user, prepared))
        except Exception as exc:  # noqa: BLE001 - compared below
            outcomes.append(exc)
    return outcomes


def _shown(outcome) -> dict:
    """An outcome as the API's response would show it, without the ids that differ between the two sets."""
    if isinstance(outcome, common.ApiError):
        return {"status": outcome.status, "code": outcome.code, "message": outcome.message}
    if isinstance(outcome, Exception):
        return {"raised": type(outcome).__name__, "message": str(outcome)}
    reservation, limits = outcome
    return {
        "amount": reservation.amount,
        "model": reservation.model,
        "prompt_tokens": reservation.prompt_tokens,
        "message_id": reservation.message_id,
        "with_key": reservation.api_key_id is not None,
        "headers": limits.headers(),
    }


def _stored(user) -> dict:
    rows = CreditTransaction.objects.filter(account__user=user).order_by("id")
    return {
        "ledger": [
            {name: getattr(row, name) for name in LEDGER_FIELDS}
            | {
                "message": row.message_id,
                "own_key": None if row.api_key_id is None else row.api_key.owner_id == user.pk,
            }
            for row in rows
        ],
        "balance": CreditAccount.objects.get(user=user).balance,
    }


def _twice(users, count, build, caplog, admitted_together: int):
    """``admitted_together``: how many of the batch's requests its one transaction must have admitted (the rest
    went alone), so that the comparison is between the two paths."""
    batch_users, single_users = users("b", count), users("s", count)
    batch_waiting, single_waiting = build(batch_users), build(single_users)
    caplog.set_level("DEBUG", logger="conversations.services.apikeys.bulk_admit")
    together = common._admit_many([(*entry, "en") for entry in batch_waiting])
    logged = [record.args for record in caplog.records if record.msg.startswith("admitted together")]
    assert logged == [(admitted_together, len(batch_waiting))]
    one_by_one = _one_by_one(single_waiting)
    return together, one_by_one, batch_users, single_users


def test_a_batch_reserves_what_one_by_one_reserves(users, caplog):
    def build(people):
        a, b, c, d = people
        return [
            _request(a, "What is the capital of France?"),
            _request(b, "A longer question " * 50, model=OTHER, max_tokens=300),
            _request(c, "Hi", max_tokens=4000),
            _request(d, "A question with a key that has room under its cap", spending_cap=Decimal(50)),
        ]

    together, one_by_one, batch_users, single_users = _twice(users, 4, build, caplog, admitted_together=3)
    assert [_shown(o) for o in together] == [_shown(o) for o in one_by_one]
    assert all(isinstance(o, tuple) for o in together)
    for batch_user, single_user in zip(batch_users, single_users, strict=True):
        assert _stored(batch_user) == _stored(single_user)
    assert credits.verify_ledger() == []


def test_refusals_are_the_same_in_a_batch(users, settings, caplog, fresh_minute):
    settings.KIMICHAT_RATE_LIMIT_TIERS = [{"above": 0, "per_minute": 3, "per_hour": 100, "per_day": 100}]

    def build(people):
        ok, restricted, poor, capped, over_key, twice, limited, unopened = people
        group = Group.objects.create(name=f"only-other-{ok.username}")
        GroupPolicy.objects.create(group=group, allowed_models=[OTHER])
        restricted.groups.add(group)
        credits.adjust(poor, -credits.get_balance(poor), created_by=poor, note="spent")
        UserBudget.objects.create(user=capped, daily_cap=Decimal("0.000001"))
        for _ in range(3):  # the minute's three requests used up
            metering.count_request(limited)
        CreditAccount.objects.filter(user=unopened).delete()  # from before the ledger: reserve opens it
        CreditTransaction.objects.filter(account__user=unopened).delete()
        return [
            _request(ok, "fine"),
            _request(restricted, "wrong model"),
            _request(restricted, "right model", model=OTHER),
            _request(poor, "no credits"),
            _request(capped, "over my cap"),
            _request(over_key, "over my key's cap", spending_cap=Decimal("0.000001")),
            _request(twice, "first of two"),
            _request(twice, "second of two"),
            _request(limited, "over the rate limit"),
            _request(unopened, "no account yet"),
        ]

    # together: ok, restricted's second, twice's first (the rest: refused, capped, or a second of the user)
    together, one_by_one, batch_users, single_users = _twice(users, 8, build, caplog, admitted_together=3)
    shown, alone = [_shown(o) for o in together], [_shown(o) for o in one_by_one]
    # The one difference: the first of a user's two requests that arrived together answers with the minute's
    # remaining requests counted after both, one by one before the second.
    assert (
        int(shown[6]["headers"].pop("X-RateLimit-Remaining"))
        == int(alone[6]["headers"].pop("X-RateLimit-Remaining")) - 1
    )
    assert shown == alone
    assert [o.get("code") or o.get("raised") or "accepted" for o in shown] == [
        "accepted",
        "model_not_allowed",
        "accepted",
        "InsufficientCredits",
        "BudgetExceeded",
        "KeyOverCap",
        "accepted",
        "accepted",
        "RateLimited",
        "accepted",
    ]
    for batch_user, single_user in zip(batch_users, single_users, strict=True):
        assert _stored(batch_user) == _stored(single_user)
    assert credits.verify_ledger() == []


@pytest.mark.parametrize("capped", [False, True])
def test_a_request_alone_is_admitted_as_one_by_one(users, caplog, capped):
    """A lone request is a batch of one: admitted in the batch's transaction (fewer statements than
    ``metering.admit``), with what one by one reserves; a capped key still goes alone."""

    def build(people):
        return [_request(people[0], "Alone", spending_cap=Decimal(50) if capped else None)]

    together, one_by_one, batch_users, single_users = _twice(users, 1, build, caplog, admitted_together=int(not capped))
    assert [_shown(o) for o in together] == [_shown(o) for o in one_by_one]
    assert _stored(batch_users[0]) == _stored(single_users[0])
    assert credits.verify_ledger() == []


def test_a_batch_costs_the_same_statements_for_three_requests_as_for_nine(users):
    def statements(people):
        waiting = [_request(person) for person in people]
        with CaptureQueriesContext(connection) as captured:
            outcomes = common._admit_many([(*entry, "en") for entry in waiting])
        assert all(isinstance(o, tuple) for o in outcomes)
        return len(captured.captured_queries)

    assert statements(users("one", 1)) == statements(users("three", 3)) == statements(users("nine", 9))


def test_a_batch_whose_transaction_fails_is_admitted_one_by_one(users, monkeypatch):
    """The batch's transaction raises (staged: a database that fails on cue cannot be): nothing of it was written,
    each request is admitted alone, and each rate limit is counted once."""
    people = users("f", 3)

    def fail(holds):
        raise RuntimeError("the database went away")

    monkeypatch.setattr(credits, "reserve_many", fail)
    outcomes = common._admit_many([(*_request(person), "en") for person in people])
    assert all(isinstance(o, tuple) for o in outcomes)
    assert [CreditTransaction.objects.filter(account__user=p, kind="charge").count() for p in people] == [1, 1, 1]
    assert [metering.limits(person).remaining for person in people] == [metering.limits(people[0]).limit - 1] * 3


# --- through the API's own admission (api_v1/common.admit) ----------------------------------------------------------


@pytest.mark.django_db(transaction=True)
async def test_requests_that_arrive_together_are_admitted_in_one_batch(make_user, caplog):
    from asgiref.sync import sync_to_async

    people = [await sync_to_async(make_user)(f"burst{n}") for n in range(6)]
    waiting = [await sync_to_async(_request)(person, f"question {n}") for n, person in enumerate(people)]
    caplog.set_level("DEBUG", logger="conversations.services.apikeys.bulk_admit")
    admitted = await asyncio.gather(*(common.admit(key, user, prepared) for key, user, prepared in waiting))
    together = [record.args for record in caplog.records if record.msg.startswith("admitted together")]
    assert together == [(6, 6)]
    assert [limits.balance for _reservation, limits in admitted] == [
        await sync_to_async(credits.get_balance)(person) for person in people
    ]


@pytest.mark.django_db(transaction=True)
async def test_a_refusal_in_a_batch_reaches_only_its_own_request(make_user):
    from asgiref.sync import sync_to_async

    rich, poor = await sync_to_async(make_user)("rich"), await sync_to_async(make_user)("poor")
    await sync_to_async(credits.adjust)(poor, -100, created_by=poor, note="spent")
    waiting = [await sync_to_async(_request)(person) for person in (rich, poor)]
    outcomes = await asyncio.gather(*(common.admit(*entry) for entry in waiting), return_exceptions=True)
    assert isinstance(outcomes[0], tuple)
    assert isinstance(outcomes[1], common.ApiError) and outcomes[1].code == "insufficient_credits"


# --- the mechanism ---------------------------------------------------------------------------------------------------


async def test_calls_that_arrive_while_a_batch_runs_go_together_in_the_next():
    runs = []
    release = asyncio.Event()

    async def run(items):
        runs.append(list(items))
        if len(runs) == 1:
            await release.wait()  # the first batch is still running while the others arrive
        return [item * 10 for item in items]

    batches = batching.Batches(run, lambda: 3)
    first = asyncio.ensure_future(batches.submit(1))
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    later = [asyncio.ensure_future(batches.submit(n)) for n in (2, 3, 4, 5)]
    await asyncio.sleep(0)
    release.set()
    assert await first == 10
    assert await asyncio.gather(*later) == [20, 30, 40, 50]
    assert runs == [[1], [2, 3, 4], [5]]  # at most size() a batch, in their order


async def test_a_failed_batch_fails_its_own_callers_only():
    calls = []

    async def run(items):
        calls.append(list(items))
        if len(calls) == 1:
            await asyncio.sleep(0.01)
            raise RuntimeError("the database went away")
        return [ValueError(f"refused {item}") if item == 3 else item for item in items]

    batches = batching.Batches(run, lambda: 10)
    first = asyncio.ensure_future(batches.submit(1))
    await asyncio.sleep(0)
    second = [asyncio.ensure_future(batches.submit(n)) for n in (2, 3)]
    outcomes = await asyncio.gather(first, *second, return_exceptions=True)
    assert isinstance(outcomes[0], RuntimeError)
    assert outcomes[1] == 2
    assert isinstance(outcomes[2], ValueError) and str(outcomes[2]) == "refused 3"
    # The queue drained: the next call runs at once.
    assert await batches.submit(4) == 4


async def test_a_caller_that_leaves_does_not_stop_the_others():
    async def run(items):
        await asyncio.sleep(0.01)
        return list(items)

    batches = batching.Batches(run, lambda: 10)
    leaving = asyncio.ensure_future(batches.submit("gone"))
    staying = asyncio.ensure_future(batches.submit("here"))
    await asyncio.sleep(0)
    leaving.cancel()
    assert await staying == "here"
    assert leaving.cancelled()


def test_a_refusal_made_alone_in_a_batch_speaks_its_requests_language(users):
    """The batch runs outside the requests (services/batching.py): each refusal is still made in the language of
    the request it answers."""
    english, chinese = users("lang", 2)
    for person in (english, chinese):
        group = Group.objects.create(name=f"only-other-{person.username}")
        GroupPolicy.objects.create(group=group, allowed_models=[OTHER])
        person.groups.add(group)
    outcomes = common._admit_many([(*_request(english), "en"), (*_request(chinese), "zh-hans")])
    assert outcomes[0].message.startswith("The model 'kimi-k2.6' is not available to your account.")
    with translation.override("zh-hans"):
        assert outcomes[1].message == model_access.refusal(MODEL) != outcomes[0].message


async def test_batches_run_outside_the_context_of_the_caller_that_started_them():
    """The drain that runs every batch is started by the first caller, but outlives it: it must not run in that
    caller's context (a request's thread-sensitive executor quits when the request ends; on PostgreSQL the next
    batch then failed with 'CurrentThreadExecutor already quit', tests/test_user_api_postgres.py)."""
    request = contextvars.ContextVar("request", default=None)

    async def run(items):
        return [request.get() for _ in items]

    batches = batching.Batches(run, lambda: 10)
    request.set("the first request")
    assert await batches.submit(1) is None


# --- the key checks of requests that arrive together (api_v1/common._authenticate_many) -----------------------------


def _shown_check(outcome) -> dict:
    if isinstance(outcome, keys.KeyRefused):
        return {"refused": outcome.code, "message": outcome.message}
    if isinstance(outcome, common.ApiError):
        return {"status": outcome.status, "code": outcome.code, "message": outcome.message}
    key, user, lim = outcome
    return {"key": key.name, "user_is_owner": user.pk == key.owner_id, "headers": lim and lim.headers()}


def test_key_checks_together_answer_as_one_by_one(users, settings):
    """Valid keys (with and without the headers' figures), unknown, over-long, revoked, expired, an inactive owner,
    an owner waiting for approval, and an address throttled in the middle of the batch by its own failures."""
    settings.LOGIN_FAILURES_PER_IP = 2

    def build(people, net):
        ok, revoked, expired, inactive, waiting = people
        roles = {"ok": ok, "revoked": revoked, "expired": expired, "inactive": inactive, "waiting": waiting}
        secrets = {person.username: keys.create(person, name=f"{role}-key").secret for role, person in roles.items()}
        keys.revoke(ApiKey.objects.get(owner=revoked))
        ApiKey.objects.filter(owner=expired).update(expires_at=timezone.now() - timezone.timedelta(seconds=1))
        inactive.is_active = False
        inactive.save()
        AccountSignup.objects.create(user=waiting, mode="approval", awaiting_approval=True)
        good, bad_ip = f"{net}.1", f"{net}.2"
        return [
            (secrets[ok.username], good, True, "en"),
            (secrets[ok.username], good, False, "zh-hans"),
            ("kc-no-such-key", bad_ip, True, "en"),
            ("kc-" + "x" * 500, f"{net}.3", True, "en"),
            (secrets[revoked.username], good, True, "en"),
            (secrets[expired.username], good, True, "zh-hans"),
            (secrets[inactive.username], f"{net}.4", True, "en"),
            (secrets[waiting.username], good, True, "en"),
            ("kc-another-wrong-one", bad_ip, True, "en"),  # the address's second failure: throttled from here
            (secrets[ok.username], bad_ip, True, "en"),
        ]

    batch = build(users("ka", 5), "10.0.0")
    alone = build(users("kb", 5), "10.1.0")
    together = [_shown_check(o) for o in common._authenticate_many(batch)]
    one_by_one = [_shown_check(common._authenticate_many([item])[0]) for item in alone]
    assert together == one_by_one
    assert [o.get("refused") or o.get("code") or o["key"] for o in together] == [
        "ok-key",
        "ok-key",
        "invalid_api_key",
        "invalid_api_key",
        "key_revoked",
        "key_expired",
        "invalid_api_key",
        "awaiting_approval",
        "invalid_api_key",
        "throttled",
    ]
    assert together[1]["headers"] is None and together[0]["headers"]["X-Credits-Remaining"]


def test_key_checks_together_cost_the_same_statements_for_three_as_for_nine(users):
    def statements(people):
        waiting = [(keys.create(person).secret, "10.2.0.1", True, "en") for person in people]
        with CaptureQueriesContext(connection) as captured:
            outcomes = common._authenticate_many(waiting)
        assert all(isinstance(o, tuple) for o in outcomes)
        return len(captured.captured_queries)

    assert statements(users("three", 3)) == statements(users("nine", 9)) == 3
