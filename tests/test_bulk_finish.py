"""The user API's requests that end together are settled together (``metering.finish_many``, the ledger's
``credits.close_many``), with ``metering.finish``'s rules, and the key is locked before the account on both paths.

Each equivalence test builds the same situation twice, for two sets of users: one set's requests are finished in
one batch, the other's one by one through ``metering.finish`` (the path the chat's ``settle``/``release`` share).
What they charge, refund, write and count must be the same. Real database."""

from __future__ import annotations

import asyncio
import os
import threading
import time
from decimal import Decimal

import pytest
from django.db import connection, connections
from django.test.utils import CaptureQueriesContext

from conversations.api_v1 import common
from conversations.kimi.events import Usage
from conversations.kimi.params import ChatRequest
from conversations.models import ApiKey, CreditAccount, CreditTransaction
from conversations.services import bulk_sql
from conversations.services.apikeys import keys, metering
from conversations.services.billing import credits, pricing

pytestmark = pytest.mark.django_db

MODEL = "kimi-k2.6"
OTHER = "moonshot-v1-8k"
FREE = "free-model"
LEDGER_FIELDS = (
    "kind",
    "amount",
    "balance_after",
    "note",
    "model",
    "state",
    "estimated",
    "prompt_tokens",
    "completion_tokens",
    "cached_tokens",
    "message_id",
)


def _key(user, spending_cap=None) -> ApiKey:
    return ApiKey.objects.get(pk=keys.create(user, name="script", spending_cap=spending_cap).key.pk)


def _reserve(key: ApiKey, *, model=MODEL, prompt_tokens=40, max_tokens=1024) -> credits.Reservation:
    return metering.admit(key.pk, key.owner, model=model, prompt_tokens=prompt_tokens, max_completion_tokens=max_tokens)


def _situation(make_user, prefix: str) -> tuple[list, list[metering.Ending]]:
    """Four users, five keys, and the endings of eleven requests: settled with the upstream's usage, with a usage
    counted locally, with none at all, beyond the reservation, released, free, a user's several requests on one
    key and on two, one listed twice, one closed before."""
    pricing.set_price(MODEL, per_request=Decimal("0.01"), per_million_prompt=600, per_million_completion=2500,
                      per_million_cached=150)  # fmt: skip
    pricing.set_price(
        OTHER, per_request=0, per_million_prompt=2000, per_million_completion=2000, per_million_cached=2000
    )
    pricing.set_price(FREE, per_request=0, per_million_prompt=0, per_million_completion=0, per_million_cached=0)
    a, b, c, d = (make_user(f"{prefix}{n}") for n in range(4))
    ka, kb, kb2, kc, kd = _key(a), _key(b), _key(b, spending_cap=Decimal(80)), _key(c), _key(d)
    r = [
        _reserve(ka),
        _reserve(ka, model=OTHER, prompt_tokens=900, max_tokens=300),
        _reserve(kb, max_tokens=50),
        _reserve(kb2, prompt_tokens=10),
        _reserve(kc),
        _reserve(kc, model=FREE),
        _reserve(kd, max_tokens=4000),
        _reserve(kd),
        _reserve(kd, model=OTHER),
    ]
    metering.finish(r[8], usage=None, estimated=True, generated=False, note="closed before")
    endings = [
        metering.Ending(r[0], Usage(prompt_tokens=41, completion_tokens=230, cached_tokens=16), False, True),
        metering.Ending(r[1], Usage(prompt_tokens=900, completion_tokens=12), True, True),
        metering.Ending(r[2], Usage(prompt_tokens=40, completion_tokens=5000), False, True),  # beyond the reservation
        metering.Ending(r[3], None, True, True),  # no usage at all: the prompt's estimate is charged
        metering.Ending(r[4], None, True, False, "upstream_error"),
        metering.Ending(r[5], Usage(prompt_tokens=40, completion_tokens=10), False, True),
        metering.Ending(r[6], Usage(prompt_tokens=40, completion_tokens=3999), False, True),
        metering.Ending(r[7], None, True, False, ""),
        metering.Ending(r[6], None, True, False, "listed twice"),
        metering.Ending(r[8], Usage(prompt_tokens=40, completion_tokens=10), False, True),  # closed before
        metering.Ending(r[0], Usage(prompt_tokens=1, completion_tokens=1), False, True),  # listed twice
    ]
    return [a, b, c, d], endings


def _one_by_one(endings) -> list:
    return [
        metering.finish(e.reservation, usage=e.usage, estimated=e.estimated, generated=e.generated, note=e.note)
        for e in endings
    ]


def _stored(user) -> dict:
    reservations = {}  # a refund names its reservation's row: by its place among the user's rows
    ledger = []
    for index, row in enumerate(CreditTransaction.objects.filter(account__user=user).order_by("id")):
        reservations[row.pk] = index
        ledger.append(
            {name: getattr(row, name) for name in LEDGER_FIELDS}
            | {
                "key": None if row.api_key_id is None else row.api_key.name + str(row.api_key.spending_cap),
                "reservation": reservations.get(row.reservation_id),
                "note": row.note.replace(f"#{row.reservation_id}", "#"),
            }
        )
    return {
        "ledger": ledger,
        "balance": CreditAccount.objects.get(user=user).balance,
        "keys": list(
            ApiKey.objects.filter(owner=user).order_by("pk").values_list("requests", "credits_spent", "spending_cap")
        ),
        "key used": [used is not None for used in ApiKey.objects.filter(owner=user).values_list("last_used_at")],
    }


def test_a_batch_settles_what_one_by_one_settles(make_user):
    batch_users, batch_endings = _situation(make_user, "b")
    single_users, single_endings = _situation(make_user, "s")
    together = metering.finish_many(batch_endings)
    one_by_one = _one_by_one(single_endings)
    assert together == one_by_one
    assert together[8] is None and together[9] is None and together[10] is None  # closed: nothing done twice
    assert together[2] < pricing.usage_cost(MODEL, batch_endings[2].usage)  # never more than was reserved
    for batch_user, single_user in zip(batch_users, single_users, strict=True):
        assert _stored(batch_user) == _stored(single_user)
    assert credits.verify_ledger() == []
    # and a second batch of the same endings finds every reservation closed and changes nothing
    before = [_stored(user) for user in batch_users]
    assert metering.finish_many(batch_endings) == [None] * len(batch_endings)
    assert [_stored(user) for user in batch_users] == before


def test_a_batch_costs_the_same_statements_for_three_requests_as_for_nine(make_user):
    def statements(prefix: str, count: int) -> int:
        endings = []
        for n in range(count):
            reservation = _reserve(_key(make_user(f"{prefix}{n}")))
            endings.append(metering.Ending(reservation, Usage(prompt_tokens=40, completion_tokens=n + 1), False, True))
        with CaptureQueriesContext(connection) as captured:
            assert all(cost is not None for cost in metering.finish_many(endings))
        return len(captured.captured_queries)

    one, three, nine = statements("one", 1), statements("three", 3), statements("nine", 9)
    assert one == three == nine
    single = _reserve(_key(make_user("alone")))
    with CaptureQueriesContext(connection) as captured:
        metering.finish(single, usage=Usage(prompt_tokens=40, completion_tokens=3), estimated=False, generated=True)
    assert nine < 9 * len(captured.captured_queries)


def test_a_reservation_with_a_message_is_refused(make_user):
    """The batch writes no message's figures: a chat's answer goes through ``settle``, which does."""
    reservation = _reserve(_key(make_user("chat")))
    with_message = credits.Reservation(**{**_fields(reservation), "message_id": 1})
    with pytest.raises(ValueError, match="without a message"):
        metering.finish_many([metering.Ending(with_message, None, True, False)])


def _fields(reservation) -> dict:
    return {name: getattr(reservation, name) for name in credits.Reservation.__slots__}


def test_a_batch_whose_transaction_fails_is_settled_one_by_one(make_user, monkeypatch):
    """The batch's transaction raises (staged: a database that fails on cue cannot be): nothing of it was written,
    and each request is settled alone."""
    people = [make_user(f"f{n}") for n in range(3)]
    reservations = [_reserve(_key(person)) for person in people]

    def fail(reservations, closings):
        raise RuntimeError("the database went away")

    monkeypatch.setattr(credits, "close_many", fail)
    endings = [metering.Ending(r, Usage(prompt_tokens=40, completion_tokens=9), False, True) for r in reservations]
    outcomes = common._finish_many(endings)
    assert all(isinstance(cost, Decimal) and cost > 0 for cost in outcomes)
    settled = CreditTransaction.objects.filter(kind="charge", state=CreditTransaction.State.SETTLED)
    assert [settled.filter(account__user=p).count() for p in people] == [1, 1, 1]
    assert [ApiKey.objects.get(owner=p).requests for p in people] == [1, 1, 1]
    assert credits.verify_ledger() == []


# --- the generic statement -------------------------------------------------------------------------------------------


def test_update_rows_sets_adds_and_keeps(make_user):
    people = [make_user(f"u{n}") for n in range(3)]
    keys_ = [_key(person) for person in people]
    ApiKey.objects.filter(pk=keys_[2].pk).update(requests=7, credits_spent=Decimal("1.5"), name="kept")
    changed = bulk_sql.update_rows(
        ApiKey,
        {
            keys_[0].pk: {"requests": 2, "credits_spent": Decimal("0.000001"), "name": "renamed"},
            keys_[2].pk: {"requests": 3, "credits_spent": Decimal("2.25")},
        },
        added=("requests", "credits_spent"),
        common={"spending_cap": Decimal("12.5")},
    )
    assert changed == 2
    rows = {k.pk: k for k in ApiKey.objects.filter(pk__in=[k.pk for k in keys_])}
    assert (rows[keys_[0].pk].requests, rows[keys_[0].pk].credits_spent, rows[keys_[0].pk].name) == (
        2,
        Decimal("0.000001"),
        "renamed",
    )
    assert (rows[keys_[2].pk].requests, rows[keys_[2].pk].credits_spent, rows[keys_[2].pk].name) == (
        10,
        Decimal("3.75"),
        "kept",
    )
    assert rows[keys_[0].pk].spending_cap == rows[keys_[2].pk].spending_cap == Decimal("12.5")
    assert (rows[keys_[1].pk].requests, rows[keys_[1].pk].spending_cap, rows[keys_[1].pk].name) == (0, None, "script")
    assert bulk_sql.update_rows(ApiKey, {}) == 0


# --- through the API's own settlement (api_v1/common.Run.finish) -----------------------------------------------------


@pytest.mark.django_db(transaction=True)
async def test_requests_that_end_together_are_settled_in_one_batch(make_user, monkeypatch):
    from asgiref.sync import sync_to_async

    sizes = []
    finish_many = metering.finish_many

    def counted(endings):
        sizes.append(len(endings))
        return finish_many(endings)

    monkeypatch.setattr(metering, "finish_many", counted)
    people = [await sync_to_async(make_user)(f"end{n}") for n in range(6)]
    runs = []
    for person in people:
        reservation = await sync_to_async(_reserve)(await sync_to_async(_key)(person))
        run = common.Run(request=ChatRequest(model=MODEL, messages=[]), reservation=reservation)
        run.text.append("An answer of a few words.")
        runs.append(run)
    await asyncio.gather(*(run.finish() for run in runs))
    assert sizes == [6]  # every settlement that waited, in one batch
    spent = await sync_to_async(lambda: list(ApiKey.objects.order_by("pk").values_list("requests", flat=True)))()
    assert spent == [1] * 6
    assert await sync_to_async(credits.verify_ledger)() == []


# --- the order of the locks (PostgreSQL: SQLite's writers take the whole file) -------------------------------------


def _waiting_for_a_lock(pid: int) -> bool:
    with connections["default"].cursor() as cursor:
        # In a transaction PostgreSQL shows the activity as first read in it, unless asked afresh.
        cursor.execute("SELECT pg_stat_clear_snapshot()")
        cursor.execute("SELECT wait_event_type FROM pg_stat_activity WHERE pid = %s", [pid])
        row = cursor.fetchone()
    return row is not None and row[0] == "Lock"


def _in_thread(func, done: dict, name: str) -> threading.Thread:
    def run():
        try:
            with connections["default"].cursor() as cursor:
                cursor.execute("SELECT pg_backend_pid()")
                done[name + " pid"] = cursor.fetchone()[0]
            done[name] = func()
        except Exception as exc:  # noqa: BLE001 - reported by the test
            done[name] = exc
        finally:
            connections.close_all()

    thread = threading.Thread(target=run)
    thread.start()
    return thread


def _wait_until(condition, done: dict, seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"timed out; so far: {done}"
        time.sleep(0.01)


@pytest.mark.skipif(
    os.environ.get("DATABASE_URL", "").split(":")[0] not in ("postgres", "postgresql"),
    reason="row locks are PostgreSQL's; SQLite serializes writers on the file",
)
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("batched", [False, True])
def test_a_settlement_and_an_admission_of_one_key_never_deadlock(make_user, batched):
    """A settlement that locked the account and then counted on the key, while an admission held the key and
    waited for the account, deadlocked (PostgreSQL aborts one of them after ``deadlock_timeout``). Staged: the
    account is held by this test while the settlement, then the admission, queue behind it."""
    from django.db import transaction

    user = make_user("both")
    key = _key(user)
    running = _reserve(key)
    ending = metering.Ending(running, Usage(prompt_tokens=40, completion_tokens=9), False, True)
    done: dict = {}
    with transaction.atomic():
        CreditAccount.objects.select_for_update().get(user=user)  # held until the block ends
        if batched:
            settle = _in_thread(lambda: metering.finish_many([ending]), done, "settle")
        else:
            settle = _in_thread(
                lambda: metering.finish(running, usage=ending.usage, estimated=False, generated=True), done, "settle"
            )
        _wait_until(lambda: "settle pid" in done and _waiting_for_a_lock(done["settle pid"]), done)
        admit = _in_thread(lambda: _reserve(key), done, "admit")
        _wait_until(lambda: "admit pid" in done and _waiting_for_a_lock(done["admit pid"]), done)
    settle.join(30)
    admit.join(30)
    assert not isinstance(done["settle"], Exception), done["settle"]
    assert not isinstance(done["admit"], Exception), done["admit"]
    assert credits.verify_ledger() == []


@pytest.mark.django_db(transaction=True)
async def test_a_request_cancelled_while_admitted_is_released_after_it_ended(make_user):
    """The client left while its reservation was being made: the reservation is released once the admission is
    done, by a task that outlives the request, and so the request's thread-sensitive context
    (kimichat/request_threads.py: asgiref refuses a thread-sensitive call from such a task)."""
    from asgiref.sync import ThreadSensitiveContext, sync_to_async

    from kimichat.request_threads import API_STEPS

    user = await sync_to_async(make_user)("leaver")
    key = await sync_to_async(_key)(user)
    request = ChatRequest(model=MODEL, messages=[{"role": "user", "content": "Hello"}])
    request.max_tokens = 1024
    async with ThreadSensitiveContext(executor=API_STEPS):
        admission = asyncio.ensure_future(common.admit(key, user, common.Prepared(request=request, prompt_tokens=9)))
        await asyncio.sleep(0)  # submitted
        admission.cancel()
        with pytest.raises(asyncio.CancelledError):
            await admission

    def states():
        return list(CreditTransaction.objects.filter(account__user=user, kind="charge").values_list("state", flat=True))

    deadline = time.monotonic() + 10
    while await sync_to_async(states)() != ["released"]:
        assert time.monotonic() < deadline, await sync_to_async(states)()
        await asyncio.sleep(0.02)
    assert await sync_to_async(lambda: ApiKey.objects.get(pk=key.pk).requests)() == 1
    assert await sync_to_async(credits.verify_ledger)() == []
