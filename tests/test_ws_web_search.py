"""Web search answers end to end: the chat websocket, the tool loop (services/chat/tools.py, registry._run) and the
offline server's $web_search round trip. One message and one seq stream across rounds; reload, stop, a failing
second round, the bounds, the billing, and the setting refused for a model without the capability."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest
from asgiref.sync import sync_to_async
from django.test import Client

from conversations.models import Conversation, CreditTransaction, Message
from conversations.offline.tools import search_sources, search_tokens
from conversations.services.billing.search_fees import default_search_fee

pytestmark = [pytest.mark.django_db(transaction=True)]

QUERY = "kimi k3 release"
QUESTION = f"What is new today? [[search:{QUERY}]]"
SEARCH_ON = {"settings": {"web_search": True}}


async def ask(tab, text=QUESTION, model="kimi-k3"):
    await tab.say(text, model=model, conversation=SEARCH_ON)


def stored(message_id: int) -> Message:
    return Message.objects.get(pk=message_id)


async def answer_row(message_id: int) -> Message:
    return await sync_to_async(stored)(message_id)


def ledger(message_id: int) -> list[CreditTransaction]:
    return list(CreditTransaction.objects.filter(message_id=message_id).order_by("id"))


async def test_a_search_answer_is_one_message_and_one_seq_stream_citing_its_sources(connect, owner, chat_settings):
    tab = await connect(owner)
    await ask(tab)
    done, frames = await tab.answer()
    message_id = done["message_id"]
    tools = [f for f in frames if f["type"] == "tool"]
    assert [(f["name"], f["query"], f["status"]) for f in tools] == [
        ("$web_search", QUERY, "searching"),
        ("$web_search", QUERY, "done"),
    ]
    assert all(f["message_id"] == message_id and f["conversation_id"] == done["conversation_id"] for f in tools)
    deltas = [f for f in frames if f["type"] == "delta"]
    assert [f["seq"] for f in deltas] == list(range(1, len(deltas) + 1))  # one stream across both rounds
    searching = frames.index(tools[0])
    assert any(f["type"] == "delta" and f["reasoning"] for f in frames[:searching])  # round one's thinking first
    assert any(f["type"] == "delta" and f["content"] for f in frames[searching:])
    assert done["status"] == "complete" and done["finish_reason"] == "stop"

    sources = search_sources(QUERY)
    searches = done["message"]["searches"]
    assert searches == [{"query": QUERY, "status": "done", "tokens": search_tokens(QUERY), "sources": sources}]
    row = await answer_row(message_id)
    assert row.searches == searches and row.seq == deltas[-1]["seq"]
    assert sources[0]["url"] in row.content

    # Two upstream calls; the second carries the call unchanged and the arguments echoed back.
    first, second = chat_settings.log.chat_requests[-2:]
    declared = [{"type": "builtin_function", "function": {"name": "$web_search"}}]
    assert first.body["tools"] == second.body["tools"] == declared
    call_turn, result = second.body["messages"][-2:]
    assert call_turn["tool_calls"][0]["function"]["name"] == "$web_search" and call_turn["reasoning_content"]
    assert result["content"] == call_turn["tool_calls"][0]["function"]["arguments"]
    # Usage of both rounds together; the search tokens came back as prompt tokens of the second.
    assert row.prompt_tokens > search_tokens(QUERY) and row.completion_tokens > 0
    # Charged: the default 1 credit per answer and one search's fee (0.005 USD at 0.01 USD a credit).
    assert default_search_fee() == Decimal("0.5")
    assert row.cost == Decimal("1.5") and Decimal(done["cost"]) == Decimal("1.5")
    rows = await sync_to_async(ledger)(message_id)
    assert sum(r.amount for r in rows) == Decimal("-1.5")
    assert "web search" in rows[0].note


async def test_reload_in_the_middle_of_the_search_round_and_after_it(connect, owner, chat_settings):
    tab = await connect(owner)
    await ask(tab, QUESTION + " [[fault:search_timeout:1.5]]")
    searching, frames = await tab.until(lambda f: f["type"] == "tool")
    conversation_id = frames[0]["conversation"]["id"]
    # A new tab (a reload) during the search: the answer streams, and its row says what is being searched.
    reload = await connect(owner)
    await reload.send(type="subscribe", conversation_id=conversation_id)
    snapshot, _ = await reload.until(lambda f: f["type"] == "message" and f["message"]["role"] == "assistant")
    assert snapshot["message"]["status"] == "streaming"
    searching_row = {"query": QUERY, "status": "searching", "tokens": search_tokens(QUERY), "sources": []}
    assert snapshot["message"]["searches"] == [searching_row]
    done, later = await reload.answer()
    assert [f["status"] for f in later if f["type"] == "tool"] == ["done"]
    deltas = [f["seq"] for f in later if f["type"] == "delta"]
    assert deltas == list(range(snapshot["message"]["seq"] + 1, done["message"]["seq"] + 1))  # no gap, no repeat
    # A reload after the answer: everything is on the stored message.
    after = await connect(owner)
    await after.send(type="subscribe", conversation_id=conversation_id)
    final, _ = await after.until(lambda f: f["type"] == "message" and f["message"]["role"] == "assistant")
    assert final["message"]["searches"][0]["status"] == "done"
    assert final["message"]["searches"][0]["sources"] == search_sources(QUERY)
    assert final["message"]["content"] == done["message"]["content"]


async def test_stop_during_the_search_stores_the_round_so_far_and_charges_the_fee(connect, owner, chat_settings):
    tab = await connect(owner)
    await ask(tab, QUESTION + " [[fault:search_timeout:5]]")
    searching, frames = await tab.until(lambda f: f["type"] == "tool")
    await tab.send(type="stop", conversation_id=searching["conversation_id"])
    done, _ = await tab.answer()
    assert done["status"] == "stopped"
    row = await answer_row(done["message_id"])
    assert row.searches[0]["status"] == "stopped"
    assert row.reasoning  # round one's thinking is kept
    assert row.cost == Decimal("1") + default_search_fee()  # the search was made upstream: its fee is charged


async def test_the_upstream_failing_in_round_two_keeps_round_one_and_its_charges(connect, owner, chat_settings):
    tab = await connect(owner)
    await ask(tab, QUESTION + " [[fault:search_error]]")
    done, frames = await tab.answer()
    errors = [f for f in frames if f["type"] == "error"]
    assert [e["code"] for e in errors] == ["upstream_server_error"] and errors[0]["retryable"]
    assert done["status"] == "error"
    row = await answer_row(done["message_id"])
    assert row.error_code == "upstream_server_error"
    assert row.searches[0]["status"] == "failed"
    assert row.reasoning and row.completion_tokens > 0  # round one, as it was streamed and reported
    assert row.cost == Decimal("1") + default_search_fee()
    rows = await sync_to_async(ledger)(done["message_id"])
    assert -sum(r.amount for r in rows) == row.cost


async def test_the_bound_on_rounds_ends_the_answer_with_its_code(connect, owner, chat_settings, settings):
    settings.KIMICHAT_TOOL_MAX_ROUNDS = 2
    tab = await connect(owner)
    await ask(tab, "news [[search:one]] [[search:two]] [[search:three]]")
    done, frames = await tab.answer()
    assert [f["query"] for f in frames if f["type"] == "tool" and f["status"] == "searching"] == ["one"]
    assert done["status"] == "interrupted"
    assert done["error"]["code"] == "tool_rounds_exceeded"
    assert [f["code"] for f in frames if f["type"] == "error"] == ["tool_rounds_exceeded"]
    assert chat_settings.chat_count == 2
    row = await answer_row(done["message_id"])
    # The second call was never followed, but the provider charges the response that made it [notes §8].
    assert [(s["query"], s["status"]) for s in row.searches] == [("one", "done"), ("two", "failed")]
    assert row.cost == Decimal("1") + 2 * default_search_fee()


async def test_the_bound_on_time_ends_a_search_that_hangs(connect, owner, chat_settings, settings):
    settings.KIMICHAT_TOOL_MAX_SECONDS = 1
    tab = await connect(owner)
    await ask(tab, QUESTION + " [[fault:search_timeout:10]]")
    done, _ = await tab.answer()
    assert done["status"] == "interrupted" and done["error"]["code"] == "tool_time_exceeded"


async def test_without_the_setting_no_tools_are_sent(connect, owner, chat_settings):
    tab = await connect(owner)
    await tab.say(QUESTION, model="kimi-k3")
    done, frames = await tab.answer()
    assert "tools" not in chat_settings.last_request_body
    assert not [f for f in frames if f["type"] == "tool"] and done["message"]["searches"] == []


async def test_a_model_without_the_capability_refuses_the_setting_on_send(connect, owner, chat_settings):
    tab = await connect(owner)
    await ask(tab, model="moonshot-v1-8k-vision-preview")
    error, _ = await tab.until_type("error")
    assert error["code"] == "invalid_parameter" and "does not offer web search" in error["message"]
    assert await sync_to_async(Conversation.objects.count)() == 0  # nothing half-stored
    assert chat_settings.chat_count == 0


def test_a_model_without_the_capability_refuses_the_setting_on_patch(owner, kimi_settings):
    client = Client()
    client.force_login(owner)
    conversation = Conversation.objects.create(owner=owner, model="moonshot-v1-8k-vision-preview")
    url = f"/api/conversations/{conversation.pk}/"
    body = json.dumps({"settings": {"web_search": True}})
    response = client.patch(url, body, content_type="application/json")
    assert response.status_code == 400 and response.json()["error"]["field"] == "settings.web_search"
    conversation.refresh_from_db()
    assert conversation.web_search is False
    # The same change with a model that has it (in the same body) is accepted.
    body = json.dumps({"model": "kimi-k3", "settings": {"web_search": True}})
    response = client.patch(url, body, content_type="application/json")
    assert response.status_code == 200 and response.json()["settings"]["web_search"] is True


def test_exports_list_the_searches_and_their_sources(owner, kimi_settings):
    from conversations.services.history.exports import export_json, export_markdown

    conversation = Conversation.objects.create(owner=owner, model="kimi-k3", web_search=True, title="news")
    searches = [{"query": QUERY, "status": "done", "tokens": 1336, "sources": search_sources(QUERY)}]
    Message.objects.create(conversation=conversation, role="assistant", content="Answer.", searches=searches)
    document = json.loads(export_json(conversation))
    assert document["messages"][0]["searches"] == searches
    assert document["conversation"]["settings"]["web_search"] is True
    markdown = export_markdown(conversation)
    assert f"*Web search: {QUERY} (done)*" in markdown
    assert f"- [{search_sources(QUERY)[0]['title']}]({search_sources(QUERY)[0]['url']})" in markdown


def test_the_search_fee_is_the_models_price_else_the_default(settings):
    from conversations.models import ModelPrice
    from conversations.services.billing.search_fees import search_fee

    ModelPrice.objects.create(model="kimi-k3", per_search=Decimal("2"))
    ModelPrice.objects.create(model="kimi-k2.6", per_request=Decimal("1"))
    assert search_fee("kimi-k3") == Decimal("2")
    assert search_fee("kimi-k2.6") == search_fee("unpriced") == Decimal("0.5")
    settings.KIMICHAT_CREDIT_VALUE_USD = Decimal("0.001")
    assert search_fee("unpriced") == Decimal("5")


def test_the_anthropic_format_offers_no_web_search(owner, kimi_settings, settings):
    settings.KIMI_API_FORMAT = "anthropic"
    client = Client()
    client.force_login(owner)
    conversation = Conversation.objects.create(owner=owner, model="kimi-k3")
    body = json.dumps({"settings": {"web_search": True}})
    response = client.patch(f"/api/conversations/{conversation.pk}/", body, content_type="application/json")
    assert response.status_code == 400 and response.json()["error"]["field"] == "settings.web_search"
    models = client.get("/api/models/").json()["models"]
    assert not any(m["capabilities"]["web_search"] for m in models)
