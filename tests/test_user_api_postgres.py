"""KimiChat's own API under real concurrency on PostgreSQL: row locks make the balance exact, and running answers
hold no database connection. Runs in the PostgreSQL pass of `make test` (skipped on SQLite)."""

from __future__ import annotations

import asyncio
from decimal import Decimal

import openai
import pytest
from asgiref.sync import sync_to_async
from django.db import connection

from conversations.models import CreditTransaction
from conversations.services.apikeys import keys
from conversations.services.billing import credits
from tests.daphne import start_daphne

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(connection.vendor != "postgresql", reason="needs PostgreSQL (set DATABASE_URL=postgres://...)"),
]
MODEL = "kimi-k2-turbo-preview"
REQUESTS = 50


async def test_fifty_concurrent_streams_on_a_balance_for_ten_exactly_ten_succeed_holding_no_connection(
    offline_kimi, tmp_path, owner
):
    # A pool of 3 connections for 10 answers streaming at once: an answer that held one while it streams would
    # leave the fourth waiting for a connection, and it would never start.
    server = await sync_to_async(start_daphne)(
        offline_kimi, tmp_path, name="api", KIMI_MAX_RETRIES="0", DATABASE_POOL_SIZE="3"
    )
    try:
        await sync_to_async(credits.adjust)(owner, Decimal(-90), created_by=None, note="ten answers' worth")
        secret = (await sync_to_async(keys.create)(owner)).secret
        client = openai.AsyncOpenAI(api_key=secret, base_url=server.url + "/v1", max_retries=0, timeout=60)
        release = asyncio.Event()
        streaming, refused = [], []

        async def one():
            try:
                stream = await client.chat.completions.create(
                    model=MODEL,
                    messages=[{"role": "user", "content": "[[tokens:40]] [[rate:20]] go"}],
                    stream=True,
                    stream_options={"include_usage": True},
                )
            except (openai.PermissionDeniedError, openai.RateLimitError) as exc:
                refused.append(exc.status_code)
                return None
            chunks = []
            async for chunk in stream:
                chunks.append(chunk)
                if len(chunks) == 2:
                    streaming.append(1)
                    await release.wait()
            return chunks

        tasks = [asyncio.create_task(one()) for _ in range(REQUESTS)]

        async def all_started():
            while len(streaming) + len(refused) < REQUESTS:
                await asyncio.sleep(0.05)

        await asyncio.wait_for(all_started(), timeout=30)
        assert len(streaming) == 10  # all ten at once, on three connections
        release.set()
        results = await asyncio.gather(*tasks)
        done = [r for r in results if r is not None]
        assert len(done) == 10 and all(r[-1].usage.completion_tokens > 0 for r in done)
        assert sorted(set(refused)) == [403, 429]
        assert await sync_to_async(credits.get_balance)(owner) == 0
        assert await sync_to_async(CreditTransaction.objects.filter(kind="charge", state="settled").count)() == 10
        assert await sync_to_async(credits.verify_ledger)() == []
    finally:
        await sync_to_async(server.stop)()
