"""On PostgreSQL a worker prepares sends on threads of their own (``SEND_THREADS``, services/db_threads.py): half of a
send's time there is waiting for the database's answers, which another send's Python can use. SQLite keeps the one
database thread a worker's calls share. Real websockets, real database, the offline server."""

from __future__ import annotations

import asyncio
import threading

import pytest
from channels.db import database_sync_to_async
from django.db import connection

from conversations.services import db_threads

pytestmark = [pytest.mark.django_db(transaction=True)]
needs_postgres = pytest.mark.skipif(connection.vendor != "postgresql", reason="SQLite sends use the database thread")


@pytest.mark.skipif(connection.vendor == "postgresql", reason="what SQLite does")
def test_on_sqlite_sends_share_the_database_thread():
    assert db_threads.send_threads() is None


@needs_postgres
async def test_a_send_is_prepared_while_the_shared_database_thread_is_busy(connect, owner, chat_settings):
    tab = await connect(owner)
    await tab.say("first [[tokens:3]]")  # the worker reads the model list once (then kept in memory for minutes)
    await tab.until_type("done")
    release = threading.Event()
    busy = asyncio.ensure_future(database_sync_to_async(release.wait)())  # the thread every other call shares
    try:
        await tab.say("hello [[tokens:3]]")
        for _ in range(200):  # the request reaches the upstream: stored, reserved and launched meanwhile
            if chat_settings.chat_count == 2:
                break
            await asyncio.sleep(0.05)
        assert chat_settings.chat_count == 2
    finally:
        release.set()
        await busy
    done, _ = await tab.until_type("done")
    assert done["status"] == "complete"


@needs_postgres
async def test_one_users_simultaneous_sends_on_several_threads_keep_the_cap(connect, owner, settings, chat_settings):
    """The per-user cap is counted under the account's row lock: exact across threads as across workers."""
    settings.KIMICHAT_MAX_CONCURRENT_ANSWERS = 3
    settings.KIMICHAT_RATE_LIMIT_TIERS = [{"above": 0, "per_minute": 1000, "per_hour": 1000, "per_day": 1000}]
    tabs = [await connect(owner) for _ in range(10)]
    await asyncio.gather(*(tab.say(f"send {n} [[tokens:40]] [[rate:20]]") for n, tab in enumerate(tabs)))

    results = await asyncio.gather(*(tab.outcome() for tab in tabs))
    assert sorted(results) == ["complete"] * 3 + ["too_many_answers"] * 7, results
    assert db_threads.send_threads() is not None
