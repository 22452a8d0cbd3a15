"""Attachments on the chat socket: documents reach the prompt as their own system message before the question,
images as image_url parts for models that take them; refusals store nothing; the credits count them; a message
keeps its files across regenerate and edit."""

from __future__ import annotations

import uuid

import pytest
from asgiref.sync import sync_to_async

from conversations.models import Attachment, Conversation, Message
from conversations.services.attachments import uploads
from conversations.services.billing import pricing
from tests.fixtures import samples

pytestmark = [pytest.mark.django_db(transaction=True)]

FAST = "kimi-k2-turbo-preview"  # no reasoning, no vision
VISION = "kimi-k2.6"


@pytest.fixture
def attach(attachment_settings):
    async def make(user, data: bytes, name: str) -> int:
        attachment = await sync_to_async(uploads.create_attachment)(user, name=name, data=data)
        return attachment.pk

    return make


def state():
    return sync_to_async(
        lambda: (
            Message.objects.count(),
            Conversation.objects.count(),
            list(Attachment.objects.order_by("id").values_list("id", "message_id")),
        )
    )()


def last_messages(handle) -> list[dict]:
    return handle.log.last_request_body["messages"]


async def test_a_document_goes_as_its_own_system_message_before_the_question(
    connect, owner, attach, attachment_settings
):
    doc = await attach(owner, samples.docx("Revenue rose in March"), "minutes.docx")
    tab = await connect(owner)
    await tab.say(
        "Summarise it [[echo:context]]", model=FAST, attachments=[doc], conversation={"system_prompt": "Be brief."}
    )
    done, frames = await tab.answer()
    assert done["status"] == "complete"
    sent = last_messages(attachment_settings)
    assert [m["role"] for m in sent] == ["system", "system", "user"]
    assert sent[0]["content"] == "Be brief."
    assert sent[1]["content"].startswith("Document: minutes.docx\n\n") and "Revenue rose in March" in sent[1]["content"]
    assert sent[2]["content"] == "Summarise it [[echo:context]]"
    # The model saw it: the offline server's echo quotes the system documents it received.
    assert "[system: Document: minutes.docx Revenue rose in March" in done["message"]["content"]
    user_frame = next(f["message"] for f in frames if f["type"] == "message" and f["message"]["role"] == "user")
    assert [a["id"] for a in user_frame["attachments"]] == [doc]
    assert user_frame["attachments"][0]["name"] == "minutes.docx"
    stored = await sync_to_async(Attachment.objects.get)(pk=doc)
    assert stored.message_id == user_frame["id"]


async def test_an_image_goes_as_an_image_url_part_to_a_vision_model(connect, owner, attach, attachment_settings):
    image = await attach(owner, samples.image("PNG"), "chart.png")
    tab = await connect(owner)
    await tab.say(
        "What is this? [[echo:context]]",
        model=VISION,
        attachments=[image],
        conversation={"settings": {"thinking": False}},
    )
    done, _ = await tab.answer()
    assert done["status"] == "complete", done
    user = last_messages(attachment_settings)[-1]
    assert user["content"][0] == {"type": "text", "text": "What is this? [[echo:context]]"}
    assert user["content"][1]["image_url"]["url"].startswith("data:image/png;base64,")
    assert "[images: 1]" in done["message"]["content"]


async def test_an_image_for_a_model_without_vision_is_refused_and_nothing_stored(
    connect, owner, attach, attachment_settings
):
    image = await attach(owner, samples.image("PNG"), "chart.png")
    before = await state()
    tab = await connect(owner)
    await tab.say("What is this?", model=FAST, attachments=[image])
    error, _ = await tab.until_type("error")
    assert error["code"] == "images_not_supported" and FAST in error["message"]
    assert await state() == before
    assert attachment_settings.chat_count == 0


async def test_another_users_attachment_is_not_found_on_send_and_edit(connect, owner, outsider, attach):
    theirs = await attach(outsider, b"outsider's private notes", "private.txt")
    before = await state()
    tab = await connect(owner)
    await tab.say("read this", model=FAST, attachments=[theirs])
    error, _ = await tab.until_type("error")
    assert error["code"] == "not_found" and "private" not in str(error)
    await tab.say("first [[tokens:2]]", model=FAST)
    done, frames = await tab.answer()
    conversation_id = frames[0]["conversation"]["id"]
    user_id = next(f["message"]["id"] for f in frames if f["type"] == "message" and f["message"]["role"] == "user")
    before = await state()
    await tab.send(
        type="edit",
        conversation_id=conversation_id,
        message_id=user_id,
        content="edited",
        client_msg_id=str(uuid.uuid4()),
        attachments=[theirs],
    )
    error, _ = await tab.until_type("error")
    assert error["code"] == "not_found"
    assert await state() == before


async def test_documents_that_do_not_fit_are_refused_with_their_sizes(connect, owner, attach, attachment_settings):
    doc = await attach(owner, ("word " * 40_000).encode(), "long.txt")
    before = await state()
    tab = await connect(owner)
    await tab.say("Summarise", model="moonshot-v1-8k", attachments=[doc])
    error, _ = await tab.until_type("error")
    assert error["code"] == "context_too_long"
    assert "long.txt ≈ 50,016" in error["message"] and "8,192" in error["message"]
    assert error["attachment_tokens"] == 50_016
    assert await state() == before
    assert attachment_settings.chat_count == 0


async def test_the_attachments_tokens_count_in_the_credit_reservation(connect, owner, attach, attachment_settings):
    await sync_to_async(pricing.set_price)(FAST, per_request="0", per_million_prompt="1000000")  # 1 credit a token
    tab = await connect(owner)
    await tab.say("small [[tokens:2]]", model=FAST)
    done, _ = await tab.answer()
    assert done["status"] == "complete"  # ~10 prompt tokens: affordable with the signup credits
    doc = await attach(owner, ("budget " * 200).encode(), "budget.txt")  # ~370 tokens
    before = await state()
    await tab.say("again [[tokens:2]]", model=FAST, attachments=[doc])
    error, _ = await tab.until_type("error")
    assert error["code"] == "insufficient_credits", error
    assert await state() == before


async def test_regenerate_and_edit_keep_the_messages_files(connect, owner, attach, attachment_settings):
    doc = await attach(owner, b"Kept across versions", "keep.txt")
    tab = await connect(owner)
    await tab.say("About the file [[tokens:2]]", model=FAST, attachments=[doc])
    _, frames = await tab.answer()
    conversation_id = frames[0]["conversation"]["id"]
    user_id = next(f["message"]["id"] for f in frames if f["type"] == "message" and f["message"]["role"] == "user")

    await tab.send(type="regenerate", conversation_id=conversation_id, client_msg_id=str(uuid.uuid4()))
    done, _ = await tab.answer()
    assert done["status"] == "complete"
    assert any(
        "Kept across versions" in m["content"] for m in last_messages(attachment_settings) if m["role"] == "system"
    )

    await tab.send(
        type="edit", conversation_id=conversation_id, message_id=user_id, content="Edited question [[tokens:2]]",
        client_msg_id=str(uuid.uuid4()),
    )  # fmt: skip
    done, frames = await tab.answer()
    assert done["status"] == "complete"
    sent = last_messages(attachment_settings)
    assert [m["role"] for m in sent] == ["system", "user"] and "Kept across versions" in sent[0]["content"]
    new_user = next(
        f["message"]
        for f in frames
        if f["type"] == "message" and f["message"]["role"] == "user" and f["message"]["id"] != user_id
    )
    assert [a["name"] for a in new_user["attachments"]] == ["keep.txt"]
    # The earlier version keeps its own row; both share one stored blob.
    rows = await sync_to_async(lambda: list(Attachment.objects.order_by("id")))()
    assert [r.message_id for r in rows] == [user_id, new_user["id"]]
    assert rows[0].storage_key == rows[1].storage_key


async def test_an_attachment_already_sent_cannot_be_sent_again(connect, owner, attach):
    doc = await attach(owner, b"once only", "once.txt")
    tab = await connect(owner)
    await tab.say("first [[tokens:2]]", model=FAST, attachments=[doc])
    await tab.answer()
    await tab.say("second", model=FAST, attachments=[doc])
    error, _ = await tab.until_type("error")
    assert error["code"] == "already_sent" and "once.txt" in error["message"]


async def test_too_many_attachments_are_refused_by_the_frame_check(connect, owner, settings):
    settings.KIMICHAT_ATTACHMENTS_PER_MESSAGE = 2
    tab = await connect(owner)
    await tab.say("many", model=FAST, attachments=[1, 2, 3])
    error, _ = await tab.until_type("error")
    assert error["code"] == "too_many_attachments" and "at most 2" in error["message"]


async def test_regenerating_a_thread_with_images_on_a_model_without_vision_is_refused(connect, owner, attach):
    image = await attach(owner, samples.image("PNG"), "chart.png")
    tab = await connect(owner)
    await tab.say(
        "Describe [[tokens:2]]", model=VISION, attachments=[image], conversation={"settings": {"thinking": False}}
    )
    _, frames = await tab.answer()
    conversation_id = frames[0]["conversation"]["id"]
    before = await state()
    await tab.send(type="regenerate", conversation_id=conversation_id, client_msg_id=str(uuid.uuid4()), model=FAST)
    error, _ = await tab.until_type("error")
    assert error["code"] == "images_not_supported"
    assert await state() == before
