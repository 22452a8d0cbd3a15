"""Credits through the whole stack: concurrent sends cannot overspend, and the `done` frame carries the balance."""

from __future__ import annotations

import asyncio
from decimal import Decimal

import pytest
from asgiref.sync import sync_to_async
from django.db import connection

from conversations.models import Conversation, CreditTransaction, Message
from conversations.services.billing import credits, pricing

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

    results = await asyncio.gather(*(tab.outcome() for tab in tabs))
    assert results.count("complete") == 10, results
    assert results.count("insufficient_credits") == 40, results
    assert await sync_to_async(credits.get_balance)(owner) == 0
    assert await sync_to_async(credits.verify_ledger)(owner) == []
    assert await sync_to_async(Message.objects.filter(role="assistant", status="complete").count)() == 10
    assert await sync_to_async(Conversation.objects.count)() == 10  # refused sends left nothing behind
    charges = await sync_to_async(CreditTransaction.objects.filter(kind="charge").count)()
    assert charges == 10
    assert chat_settings.chat_count == 10


async def test_with_token_prices_an_answer_at_its_budget_costs_exactly_what_was_reserved(connect, owner, chat_settings):
    """The reservation is the worst case: the output budget sent upstream is the one reserved for, so a long
    answer that uses all of it costs exactly the reservation, and nothing is waived."""

    def setup():
        from django.conf import settings

        model = settings.KIMI_DEFAULT_MODEL
        pricing.set_price(model, per_request="1", per_million_prompt="1000", per_million_completion="100000")
        return Conversation.objects.create(owner=owner, model=model, max_tokens=20)

    conversation = await sync_to_async(setup)()
    tab = await connect(owner)
    await tab.say("tell me a very long story [[tokens:500]]", conversation_id=conversation.pk)
    done, _ = await tab.answer()
    assert done["status"] == "complete"
    sent = chat_settings.last_request_body
    assert sent["max_completion_tokens"] == 20

    def ledger():
        answer = Message.objects.get(conversation=conversation, role="assistant")
        return answer, list(CreditTransaction.objects.filter(account__user=owner, message=answer).order_by("pk"))

    answer, rows = await sync_to_async(ledger)()
    [reservation] = rows  # no refund (all of the budget was used) and no extra charge
    assert answer.completion_tokens == sent["max_completion_tokens"]
    bound = await sync_to_async(credits.estimate_cost)(conversation.model, answer.prompt_tokens, 20)
    assert -reservation.amount == bound == answer.cost == Decimal(done["cost"])
    assert "not charged" not in reservation.note
    assert await sync_to_async(credits.verify_ledger)(owner) == []
