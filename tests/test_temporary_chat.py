"""Temporary chats: out of every history read, resumable while a tab shows them, deleted once closed, still charged.

Real ASGI app and sockets, the offline Kimi server on loopback, the real reaper functions.
"""

from __future__ import annotations

import io
import zipfile
from datetime import timedelta

import pytest
from asgiref.sync import sync_to_async
from django.test import Client
from django.utils import timezone

from conversations.models import Conversation, CreditTransaction, Message, SharedLink
from conversations.services.chat.registry import get_registry
from conversations.services.history import temporary

pytestmark = [pytest.mark.django_db(transaction=True)]

TEMPORARY = {"temporary": True}


def _client(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


async def _temporary_turn(tab, text: str = "keep this secret [[tokens:30]]") -> tuple[int, dict]:
    await tab.say(text, model="kimi-k2-thinking", conversation=TEMPORARY)
    done, frames = await tab.answer()
    conversation = frames[0]["conversation"]
    assert frames[0]["type"] == "conversation" and conversation["temporary"] is True
    return conversation["id"], done


async def _rows(conversation_id: int) -> tuple[int, int]:
    conversations = await sync_to_async(Conversation.objects.filter(pk=conversation_id).count)()
    messages = await sync_to_async(Message.objects.filter(conversation_id=conversation_id).count)()
    return conversations, messages


async def test_a_temporary_chat_leaves_no_row_behind_but_keeps_its_charge(connect, owner):
    registry = get_registry()
    tab = await connect(owner)
    conversation_id, done = await _temporary_turn(tab)
    assert done["status"] == "complete" and done["message"]["content"]
    charged = await sync_to_async(CreditTransaction.objects.get)(message_id=done["message_id"], kind="charge")
    assert charged.amount < 0 and charged.state == "settled"

    # While its tab shows it, the heartbeat keeps it seen: the reaper passes it by.
    await registry._keep_temporary_chats_alive()
    assert await sync_to_async(temporary.delete_abandoned)(60) == 0
    assert await _rows(conversation_id) == (1, 2)

    await tab.close()
    await registry._keep_temporary_chats_alive()  # no socket follows it any more: no longer kept alive
    assert conversation_id not in registry.temporary
    assert await sync_to_async(temporary.delete_abandoned)(0) == 1
    assert await _rows(conversation_id) == (0, 0)

    # The ledger keeps the charge with the model and tokens, and nothing of what was said.
    charged = await sync_to_async(CreditTransaction.objects.get)(pk=charged.pk)
    assert charged.message_id is None and charged.amount < 0 and charged.model == "kimi-k2-thinking"
    assert charged.completion_tokens > 0 and "secret" not in charged.note


async def test_an_answer_still_running_is_not_deleted_and_a_reload_resumes_it(connect, owner):
    registry = get_registry()
    tab = await connect(owner)
    await tab.say("slow one [[tokens:60]] [[rate:40]]", model="kimi-k2", conversation=TEMPORARY)
    _, frames = await tab.until(lambda f: f["type"] == "delta")
    conversation_id = frames[0]["conversation"]["id"]
    await tab.close()  # the tab is reloaded

    await registry._keep_temporary_chats_alive()
    # Not seen by any tab, but its answer is still being written: it must be settled before it may go.
    assert await sync_to_async(temporary.delete_abandoned)(0) == 0

    reloaded = await connect(owner)
    await reloaded.send(type="subscribe", conversation_id=conversation_id)
    snapshot, _ = await reloaded.until(lambda f: f["type"] == "message" and f["message"]["role"] == "assistant")
    assert snapshot["message"]["status"] == "streaming"
    done, _ = await reloaded.answer()
    assert done["status"] == "complete"
    await registry._keep_temporary_chats_alive()
    assert conversation_id in registry.temporary
    assert await sync_to_async(temporary.delete_abandoned)(60) == 0  # the reloaded tab shows it: kept
    await reloaded.close()
    await registry._keep_temporary_chats_alive()
    assert await sync_to_async(temporary.delete_abandoned)(0) == 1
    assert await _rows(conversation_id) == (0, 0)


async def test_a_temporary_chat_within_its_grace_is_kept(connect, owner):
    """A reload takes a moment: a chat last seen a few seconds ago stays; one unseen past the grace goes."""
    tab = await connect(owner)
    conversation_id, _ = await _temporary_turn(tab)
    await tab.close()
    await get_registry()._keep_temporary_chats_alive()
    assert await sync_to_async(temporary.delete_abandoned)(60) == 0
    await sync_to_async(Conversation.objects.filter(pk=conversation_id).update)(
        temporary_seen_at=timezone.now() - timedelta(seconds=61)
    )
    assert await sync_to_async(temporary.delete_abandoned)(60) == 1


async def test_history_chats_are_never_deleted_by_the_temporary_reaper(connect, owner):
    tab = await connect(owner)
    await tab.say("a kept chat [[tokens:5]]")
    _, frames = await tab.answer()
    await tab.close()
    assert await sync_to_async(temporary.delete_abandoned)(0) == 0
    assert (await _rows(frames[0]["conversation"]["id"]))[0] == 1


async def test_temporary_must_be_true_or_false(connect, owner):
    tab = await connect(owner)
    await tab.say("hello", conversation={"temporary": "yes"})
    error, _ = await tab.until_type("error")
    assert error["code"] == "bad_frame" and error["field"] == "conversation.temporary"
    assert await sync_to_async(Conversation.objects.count)() == 0


async def test_history_reads_leave_temporary_chats_out(connect, owner):
    tab = await connect(owner)
    temporary_id, _ = await _temporary_turn(tab, "zanzibar temporary [[echo]]")
    await tab.say("zanzibar kept [[echo]]")
    _, frames = await tab.answer()
    kept_id = frames[0]["conversation"]["id"]
    await sync_to_async(_check_history_reads)(owner, temporary_id, kept_id)


def _check_history_reads(owner, temporary_id: int, kept_id: int) -> None:
    client = _client(owner)
    assert [c["id"] for c in client.get("/api/conversations/").json()["results"]] == [kept_id]
    # Search: titles and messages (the FTS table on SQLite, the tsvector on PostgreSQL), short terms by LIKE too.
    for query in ("zanzibar", "zan", "temporary"):
        found = client.get("/api/search/", {"q": query}).json()["results"]
        assert temporary_id not in [hit["conversation_id"] for hit in found], query
    found = client.get("/api/search/", {"q": "zanzibar"}).json()["results"]
    assert [hit["conversation_id"] for hit in found] == [kept_id]

    archive = client.get("/api/export/all.zip")
    names = zipfile.ZipFile(io.BytesIO(b"".join(archive.streaming_content))).namelist()
    assert len(names) == 1

    for url, method in [
        (f"/api/conversations/{temporary_id}/share/", client.post),
        (f"/api/conversations/{temporary_id}/export.md", client.get),
        (f"/api/conversations/{temporary_id}/export.json", client.get),
    ]:
        response = method(url)
        assert response.status_code == 409, url
        assert response.json()["error"]["code"] == "temporary_chat"
        assert "temporary chat" in response.json()["error"]["message"]
    assert SharedLink.objects.count() == 0

    # Its own tab can still read it (a reload of the page shows it).
    assert client.get(f"/api/conversations/{temporary_id}/").json()["temporary"] is True
    assert client.get(f"/c/{temporary_id}/").status_code == 200


async def test_another_users_temporary_chat_is_not_found(connect, owner, outsider):
    tab = await connect(owner)
    temporary_id, _ = await _temporary_turn(tab)
    spy = await connect(outsider)
    await spy.send(type="subscribe", conversation_id=temporary_id)
    error, _ = await spy.until_type("error")
    assert error["code"] == "not_found"
    await sync_to_async(_check_not_found)(outsider, temporary_id)


def _check_not_found(outsider, temporary_id: int) -> None:
    client = _client(outsider)
    assert client.get(f"/api/conversations/{temporary_id}/").status_code == 404
    assert client.post(f"/api/conversations/{temporary_id}/share/").status_code == 404


async def test_leaving_a_temporary_chat_deletes_it_at_once(connect, owner):
    """The page deletes a temporary chat it leaves (DELETE), without waiting for the reaper."""
    tab = await connect(owner)
    temporary_id, _ = await _temporary_turn(tab)
    response = await sync_to_async(lambda: _client(owner).delete(f"/api/conversations/{temporary_id}/"))()
    assert response.status_code == 204
    assert await _rows(temporary_id) == (0, 0)
