"""Credits through the whole stack: concurrent sends cannot overspend, and the `done` frame carries the balance."""

from __future__ import annotations

import asyncio
from decimal import Decimal

import pytest
from asgiref.sync import sync_to_async
from django.db import connection

from conversations.models import Conversation, CreditTransaction, Message
from conversations.services.billing import credits

pytestmark = [pytest.mark.django_db(transaction=True)]


async def test_done_carries_the_balance_after_the_charge(connect, owner):
    tab = await connect(owner)
    await tab.say("hello [[tokens:5]]")
    done, _ = await tab.answer()
    assert Decimal(done["balance"]) == Decimal(99)  # 100 signup credits, 1 credit per request by default
    assert Decimal(done["cost"]) == Decimal(1)
    assert await sync_to_async(credits.get_balance)(owner) == Decimal(99)


@pytest.mark.skipif(connection.vendor != "postgresql", reason="row-lock concurrency is what PostgreSQL must prove")
async def test_fifty_simultaneous_sends_with_credits_for_ten(connect, owner, settings, chat_settings):
    settings.KIMICHAT_MAX_CONCURRENT_ANSWERS = 100
    settings.KIMICHAT_RATE_LIMIT_TIERS = [{"above": 0, "per_minute": 1000, "per_hour": 1000, "per_day": 1000}]
    balance = await sync_to_async(credits.get_balance)(owner)
    await sync_to_async(credits.adjust)(owner, Decimal(10) - balance, created_by=None, note="test: 10 left")
    tabs = [await connect(owner) for _ in range(50)]
    await asyncio.gather(*(tab.say(f"send {n} [[tokens:5]]") for n, tab in enumerate(tabs)))

    async def outcome(tab):
        frame, _ = await tab.until(lambda f: f["type"] in ("done", "error"), timeout=60)
        if frame["type"] == "error":
            return frame["code"]
        return frame["status"]

    results = await asyncio.gather(*(outcome(tab) for tab in tabs))
    assert results.count("complete") == 10, results
    assert results.count("insufficient_credits") == 40, results
    assert await sync_to_async(credits.get_balance)(owner) == 0
    assert await sync_to_async(credits.verify_ledger)(owner) == []
    assert await sync_to_async(Message.objects.filter(role="assistant", status="complete").count)() == 10
    assert await sync_to_async(Conversation.objects.count)() == 10  # refused sends left nothing behind
    charges = await sync_to_async(CreditTransaction.objects.filter(kind="charge").count)()
    assert charges == 10
    assert chat_settings.chat_count == 10
