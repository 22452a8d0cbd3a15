"""Chat titles written by the model after the first answer (services/personal/titles.py), through the real websocket,
the offline Kimi server and the ledger; and written again on request (POST /api/conversations/<id>/title/)."""

from __future__ import annotations

import asyncio
from decimal import Decimal

import pytest
from asgiref.sync import sync_to_async
from django.test import AsyncClient

from conversations.models import Conversation, CreditTransaction, Message
from conversations.services.billing import credits
from conversations.services.personal import titles

pytestmark = [pytest.mark.django_db(transaction=True)]


@pytest.fixture
def auto_titles(settings):
    settings.KIMICHAT_AUTO_TITLES = True
    return settings


def title_rows(user):
    return sync_to_async(
        lambda: list(
            CreditTransaction.objects.filter(account__user=user, kind=CreditTransaction.Kind.TITLE).order_by("id")
        )
    )()


def get_conversation(pk):
    return sync_to_async(Conversation.objects.get)(pk=pk)


async def first_turn(tab, text: str, **extra) -> tuple[dict, dict]:
    """Send ``text`` in a new chat; the `done` frame and the chat's frame from the start."""
    await tab.say(text, **extra)
    done, frames = await tab.answer()
    return done, frames[0]["conversation"]


async def test_the_first_answer_gets_a_title_announced_to_every_tab_and_charged(
    connect, owner, chat_settings, auto_titles
):
    tab, other_tab = await connect(owner), await connect(owner)  # the other tab follows no conversation
    done, created = await first_turn(tab, "how does binary search work on sorted arrays?")
    assert done["status"] == "complete" and created["title"] == "how does binary search work on sorted arrays?"
    frame, _ = await tab.until(lambda f: f["type"] == "conversation" and f["conversation"]["title_source"])
    assert frame["conversation"]["id"] == created["id"]
    assert frame["conversation"]["title"] == "How does binary search work"
    assert frame["conversation"]["title_source"] == "generated"
    elsewhere, _ = await other_tab.until(lambda f: f["type"] == "conversation" and f["conversation"]["title_source"])
    assert elsewhere["conversation"]["title"] == "How does binary search work"

    stored = await get_conversation(created["id"])
    assert (stored.title, stored.title_source) == ("How does binary search work", "generated")
    # The request: non-streaming, a tight budget, no thinking (kimi-k2.6 has the switch), sampling left alone.
    body = chat_settings.last_request_body
    assert body["stream"] is False and body["max_completion_tokens"] == titles.TITLE_OUTPUT_TOKENS
    assert body["thinking"] == {"type": "disabled"} and "temperature" not in body
    assert "title of a chat" in body["messages"][0]["content"]
    # On the ledger as a title request: reserved, settled (1 credit here: tests price a request at 1), net one row.
    [row] = await title_rows(owner)
    assert row.state == CreditTransaction.State.SETTLED and row.message_id == done["message_id"]
    assert row.prompt_tokens > 0 and row.completion_tokens > 0
    balance = await sync_to_async(credits.get_balance)(owner)
    assert Decimal(done["balance"]) - balance == Decimal(1)
    assert await sync_to_async(credits.verify_ledger)(owner) == []


async def test_an_always_thinking_model_gets_room_to_think_and_a_low_effort(connect, owner, chat_settings, auto_titles):
    tab = await connect(owner)
    _, created = await first_turn(tab, "Explain rate limiting with a token bucket", model="kimi-k3")
    frame, _ = await tab.until(lambda f: f["type"] == "conversation" and f["conversation"]["title_source"])
    assert frame["conversation"]["title"] == "Explain rate limiting with a"
    body = chat_settings.last_request_body
    assert body["max_completion_tokens"] == titles.TITLE_THINKING_OUTPUT_TOKENS
    assert body["reasoning_effort"] == "low" and "thinking" not in body and "temperature" not in body


async def test_the_title_is_in_the_users_language(connect, owner, chat_settings, auto_titles):
    tab = await connect(owner)
    await first_turn(tab, "请解释一下二分查找的原理和用法")
    frame, _ = await tab.until(lambda f: f["type"] == "conversation" and f["conversation"]["title_source"])
    assert frame["conversation"]["title"] == "请解释一下二分查找的"


async def test_absorbed_title_costs_leave_the_ledger_alone(connect, owner, chat_settings, auto_titles, settings):
    settings.KIMICHAT_TITLE_COST_ABSORBED = True
    tab = await connect(owner)
    done, _ = await first_turn(tab, "hello there, what is caching")
    await tab.until(lambda f: f["type"] == "conversation" and f["conversation"]["title_source"])
    assert await title_rows(owner) == []
    assert await sync_to_async(credits.get_balance)(owner) == Decimal(done["balance"])


async def test_a_failing_title_leaves_the_answer_and_the_first_message_title(
    connect, owner, chat_settings, auto_titles, monkeypatch
):
    async def broken(chat, db):
        raise RuntimeError("a bug in the title code")

    monkeypatch.setattr(titles, "_ask", broken)
    tab = await connect(owner)
    done, created = await first_turn(tab, "what is a rate limiter")
    await titles.wait_for_titles()
    assert await tab.nothing(0.3)  # no conversation frame
    stored = await get_conversation(created["id"])
    assert (stored.title, stored.title_source) == ("what is a rate limiter", "")
    answer = await sync_to_async(Message.objects.get)(pk=done["message_id"])
    assert answer.status == "complete" and answer.content == done["message"]["content"]
    # The next send works as ever.
    await tab.say("and another question", conversation_id=created["id"])
    again, _ = await tab.answer()
    assert again["status"] == "complete"


async def test_an_unreachable_upstream_releases_the_title_reservation(owner, kimi_settings, settings, auto_titles):
    conversation = await sync_to_async(Conversation.objects.create)(owner=owner, model="kimi-k2.6", title="q")
    await sync_to_async(Message.objects.create)(conversation=conversation, role="user", content="q")
    await sync_to_async(Message.objects.create)(conversation=conversation, role="assistant", content="a")
    before = await sync_to_async(credits.get_balance)(owner)
    settings.KIMI_BASE_URL = "http://127.0.0.1:9/v1"  # nothing listens on the discard port
    settings.KIMI_MAX_RETRIES = 0
    with pytest.raises(titles.TitleFailed):
        await titles.generate(conversation.pk, user=owner)
    assert (await get_conversation(conversation.pk)).title == "q"
    [row] = await title_rows(owner)
    assert row.state == CreditTransaction.State.RELEASED
    assert await sync_to_async(credits.get_balance)(owner) == before


async def test_a_rename_is_never_overwritten_and_later_answers_do_not_rename(
    connect, owner, chat_settings, auto_titles
):
    tab = await connect(owner)
    _, created = await first_turn(tab, "first question about caching")
    await tab.until(lambda f: f["type"] == "conversation" and f["conversation"]["title_source"])
    requests = chat_settings.chat_count
    await tab.say("a second question", conversation_id=created["id"])
    await tab.answer()
    await titles.wait_for_titles()
    assert chat_settings.chat_count == requests + 1  # the answer only
    # A chat the user renamed before its first answer ended keeps the user's name.
    await tab.say("name me not")
    _, frames = await tab.answer()
    renamed = frames[0]["conversation"]["id"]
    await sync_to_async(Conversation.objects.filter(pk=renamed).update)(title="Mine", title_source="user")
    await titles.wait_for_titles()
    assert (await get_conversation(renamed)).title == "Mine"


async def test_no_title_without_credits_for_it(connect, owner, chat_settings, auto_titles):
    tab = await connect(owner)
    balance = await sync_to_async(credits.get_balance)(owner)
    await sync_to_async(credits.adjust)(owner, -(balance - 1), created_by=None, note="leave one answer")
    done, created = await first_turn(tab, "one last question")
    assert done["status"] == "complete" and Decimal(done["balance"]) == 0
    await titles.wait_for_titles()
    assert (await get_conversation(created["id"])).title == "one last question"
    assert await title_rows(owner) == []


async def test_the_menu_asks_for_a_title_again(connect, owner, outsider, chat_settings, auto_titles):
    tab = await connect(owner)
    _, created = await first_turn(tab, "tell me about unicode text")
    await tab.until(lambda f: f["type"] == "conversation" and f["conversation"]["title_source"])
    await sync_to_async(Conversation.objects.filter(pk=created["id"]).update)(title="Mine", title_source="user")
    client = AsyncClient()
    await sync_to_async(client.force_login)(owner)
    response = await client.post(f"/api/conversations/{created['id']}/title/")
    assert response.status_code == 200, response.content
    assert response.json()["title"] == "Tell me about unicode text"
    assert response.json()["title_source"] == "generated"
    frame, _ = await tab.until(lambda f: f["type"] == "conversation")
    assert frame["conversation"]["title"] == "Tell me about unicode text"
    assert len(await title_rows(owner)) == 2
    assert (await client.get(f"/api/conversations/{created['id']}/title/")).status_code == 405

    stranger = AsyncClient()
    await sync_to_async(stranger.force_login)(outsider)
    response = await stranger.post(f"/api/conversations/{created['id']}/title/")
    assert response.status_code == 404 and response.json()["error"]["code"] == "not_found"
    assert len(await title_rows(owner)) == 2 and await title_rows(outsider) == []


def test_clean_title_takes_the_first_line_without_quotes_labels_or_final_punctuation():
    assert titles.clean_title('\n  Title: "Binary search explained."\nmore') == "Binary search explained"
    assert titles.clean_title("**标题：二分查找。**") == "二分查找"
    assert titles.clean_title("   ") == ""
    long = titles.clean_title("word " * 40)
    assert len(long) <= titles.TITLE_MAX_CHARS + 1 and long.endswith("…")


async def test_teardown_waits_for_titles():
    await asyncio.sleep(0)
    await titles.wait_for_titles()


async def test_asking_for_titles_counts_against_the_rate_limit(owner, kimi_settings, settings, fresh_minute):
    settings.KIMICHAT_RATE_LIMIT_TIERS = [{"above": 0, "per_minute": 2, "per_hour": 100, "per_day": 100}]
    conversation = await sync_to_async(Conversation.objects.create)(owner=owner, model="kimi-k2.6", title="q")
    await sync_to_async(Message.objects.create)(conversation=conversation, role="user", content="name this chat")
    await sync_to_async(Message.objects.create)(conversation=conversation, role="assistant", content="a")
    client = AsyncClient()
    await sync_to_async(client.force_login)(owner)
    url = f"/api/conversations/{conversation.pk}/title/"
    assert [(await client.post(url)).status_code for _ in range(2)] == [200, 200]
    refused = await client.post(url)
    assert refused.status_code == 429 and refused.json()["error"]["code"] == "rate_limited"
    assert int(refused["Retry-After"]) >= 1
    assert len(await title_rows(owner)) == 2


def test_a_title_reservation_left_by_a_dead_worker_is_released_at_start_up(owner):
    from conversations.services.chat.reaper import reap_all_sync

    before = credits.get_balance(owner)
    user = owner
    credits.reserve(user, model="kimi-k2.6", prompt_tokens=100, max_completion_tokens=48, kind="title")
    assert credits.get_balance(owner) == before - 1
    reap_all_sync()
    assert credits.get_balance(owner) == before
    [row] = CreditTransaction.objects.filter(kind="title")
    assert row.state == CreditTransaction.State.RELEASED
    assert credits.verify_ledger(owner) == []


async def test_every_offline_model_takes_the_title_request_and_answers_with_a_title(make_kimi_client):
    """The request stays within each model's rules, which the offline server enforces as Kimi does (a sampling
    parameter on kimi-k3, a thinking switch on an always-thinking model would be a 400)."""
    from conversations.offline.server import DEFAULT_MODELS

    client = make_kimi_client()
    for model in DEFAULT_MODELS:
        request = titles.title_request(model, "Plan a three-day trip to Kyoto in April", "Day one: temples.")
        result = await client.complete_chat(request)
        assert titles.clean_title(result.text) == "Plan a three-day trip to", model
        assert result.finish == "stop", model
