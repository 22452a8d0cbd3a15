"""kimi-k3's reasoning effort as a conversation setting: stored, validated, sent only to a model that takes it."""

from __future__ import annotations

import json

import pytest
from asgiref.sync import sync_to_async

from conversations.models import Conversation

pytestmark = [pytest.mark.django_db(transaction=True)]


def patch(client, conversation, body):
    return client.patch(f"/api/conversations/{conversation.pk}/", json.dumps(body), content_type="application/json")


def test_patch_sets_and_clears_the_reasoning_effort(owner_client, owner):
    conversation = Conversation.objects.create(owner=owner, model="kimi-k3")
    body = patch(owner_client, conversation, {"settings": {"reasoning_effort": "low"}}).json()
    assert body["settings"]["reasoning_effort"] == "low"
    conversation.refresh_from_db()
    assert conversation.reasoning_effort == "low"
    body = patch(owner_client, conversation, {"settings": {"reasoning_effort": None}}).json()
    assert body["settings"]["reasoning_effort"] is None


async def test_the_reasoning_effort_reaches_kimi_k3_and_no_other_model(connect, owner, chat_settings):
    tab = await connect(owner)
    await tab.say(
        "effort [[tokens:5]]",
        model="kimi-k3",
        conversation={"settings": {"reasoning_effort": "high", "max_tokens": 200}},
    )
    done, frames = await tab.answer()
    assert done["status"] == "complete", done
    assert frames[0]["conversation"]["settings"]["reasoning_effort"] == "high"
    assert chat_settings.last_request_body["reasoning_effort"] == "high"
    conversation_id = frames[0]["conversation"]["id"]
    stored = await sync_to_async(Conversation.objects.get)(pk=conversation_id)
    assert stored.reasoning_effort == "high"

    # Kept on the conversation, but a model without the setting is not sent it (it would be a 400 there).
    await tab.say("again [[tokens:5]]", conversation_id=conversation_id, model="kimi-k2.6")
    done, _ = await tab.answer()
    assert done["status"] == "complete", done
    assert "reasoning_effort" not in chat_settings.last_request_body


async def test_a_bad_reasoning_effort_in_a_send_is_named(connect, owner, chat_settings):
    tab = await connect(owner)
    await tab.say("x", model="kimi-k3", conversation={"settings": {"reasoning_effort": "extreme"}})
    refused, _ = await tab.until_type("error")
    assert refused["code"] == "bad_frame" and refused["field"] == "conversation.settings.reasoning_effort"
    assert "low, high, max" in refused["message"]
    assert await sync_to_async(Conversation.objects.count)() == 0
