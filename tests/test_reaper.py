"""Answers left `streaming` by a dead worker end up `interrupted` with their checkpointed text."""

from __future__ import annotations

import pytest
from asgiref.sync import sync_to_async
from django.core.management import call_command
from django.utils import timezone

from conversations.models import Conversation, Message
from conversations.services.billing import credits
from conversations.services.chat.registry import get_registry


def orphan(owner, content="partial answer so far", fees=0, **fields):
    conversation = Conversation.objects.create(owner=owner, model="kimi-k2.6", title="t")
    Message.objects.create(conversation=conversation, role="user", content="q")
    answer = Message.objects.create(
        conversation=conversation,
        role="assistant",
        status="streaming",
        content=content,
        seq=7,
        prompt_tokens=12,
        created_at=timezone.now() - timezone.timedelta(minutes=5),
        **fields,
    )
    credits.reserve(owner, model="kimi-k2.6", prompt_tokens=12, max_completion_tokens=100, message=answer, fees=fees)
    return answer


@pytest.mark.django_db
def test_reapgenerations_command_marks_orphans_interrupted_and_charges_what_was_written(owner, capsys):
    answer = orphan(owner)
    empty = orphan(owner, content="")
    balance_before_reap = credits.get_balance(owner)
    call_command("reapgenerations")
    assert "2 interrupted answer(s) marked." in capsys.readouterr().out
    answer.refresh_from_db()
    empty.refresh_from_db()
    assert (answer.status, answer.error_code, answer.content) == ("interrupted", "worker_lost", "partial answer so far")
    assert answer.usage_estimated and answer.completion_tokens > 0
    assert empty.status == "interrupted" and empty.cost == 0  # nothing generated: released in full
    assert credits.get_balance(owner) == balance_before_reap + 1  # the empty one's credit came back
    assert credits.verify_ledger(owner) == []


@pytest.mark.django_db(transaction=True)
async def test_the_running_reaper_tells_subscribers(connect, owner):
    tab = await connect(owner)  # starts the worker's reaper, whose first round finds nothing yet
    answer = await sync_to_async(orphan)(owner)
    await tab.send(type="subscribe", conversation_id=answer.conversation_id)
    snapshot, _ = await tab.until(lambda f: f["type"] == "message" and f["message"]["id"] == answer.pk)
    assert snapshot["message"]["status"] == "streaming"
    assert snapshot["message"]["content"] == "partial answer so far"  # from the last checkpoint
    assert await get_registry().reap() == 1
    done, _ = await tab.answer()
    assert done["status"] == "interrupted" and done["error"]["code"] == "worker_lost"
    assert done["message"]["content"] == "partial answer so far"


@pytest.mark.django_db(transaction=True)
async def test_the_reaper_leaves_live_and_fresh_answers_alone(connect, owner):
    tab = await connect(owner)
    await tab.say("long [[tokens:300]] [[rate:100]]", model="kimi-k2-turbo-preview")
    first, _ = await tab.until_type("delta")
    registry = get_registry()
    assert await registry.reap(grace=0) == 0  # it runs here: not an orphan
    await tab.send(type="stop", conversation_id=first["conversation_id"])
    done, _ = await tab.answer()
    assert done["status"] == "stopped"


@pytest.mark.django_db
def test_a_reaped_answer_keeps_the_fee_of_searches_it_made_and_fails_the_unanswered_one(owner):
    from decimal import Decimal

    from conversations.services.billing.search_fees import default_search_fee

    searches = [{"query": "one", "status": "done", "tokens": 10, "sources": []}]
    searches.append({"query": "two", "status": "searching", "tokens": 10, "sources": []})
    # Reserved as the send path does for a web-search answer: its searches' fees with it (never more is charged).
    answer = orphan(owner, content="", searches=searches, fees=2 * default_search_fee())
    call_command("reapgenerations")
    answer.refresh_from_db()
    assert [s["status"] for s in answer.searches] == ["done", "failed"]
    assert answer.cost == Decimal("1") + 2 * default_search_fee()  # not released: two searches were made upstream
    assert credits.verify_ledger(owner) == []
