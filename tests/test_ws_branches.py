"""Branches over the chat websocket: an edit of any earlier question starts a branch, and the thread sent upstream is
exactly the active branch's path, as the offline Kimi server received it."""

from __future__ import annotations

import uuid

import pytest
from asgiref.sync import sync_to_async

from conversations.models import Conversation, Message
from conversations.services.history import branches

pytestmark = [pytest.mark.django_db(transaction=True)]


def current(conversation_id):
    rows = Message.objects.filter(conversation_id=conversation_id).current().order_by("id")
    return sync_to_async(lambda: [(m.role, m.content) for m in rows])()


def upstream(chat_settings) -> list[tuple[str, str]]:
    """The turns of the last request the offline server received (its answers hold their own text)."""
    return [(m["role"], m["content"]) for m in chat_settings.last_request_body["messages"]]


async def five_questions(tab) -> tuple[int, list[dict]]:
    """A chat of five questions and their answers; returns its id and the user messages as stored."""
    conversation_id, users = None, []
    for n in range(1, 6):
        await tab.say(f"question {n} [[tokens:3]]", conversation_id=conversation_id)
        done, frames = await tab.answer()
        conversation_id = done["conversation_id"]
        users += [f["message"] for f in frames if f["type"] == "message" and f["message"]["role"] == "user"]
    return conversation_id, users


async def edit(tab, conversation_id, message_id, content):
    await tab.send(
        type="edit",
        conversation_id=conversation_id,
        message_id=message_id,
        content=content,
        client_msg_id=str(uuid.uuid4()),
    )


async def test_editing_an_earlier_question_starts_a_branch_sent_upstream_alone(connect, owner, chat_settings):
    tab = await connect(owner)
    conversation_id, users = await five_questions(tab)
    before = await current(conversation_id)
    assert len(before) == 10

    await edit(tab, conversation_id, users[2]["id"], "question 3, edited [[tokens:3]]")
    done, frames = await tab.answer()
    assert done["status"] == "complete"
    # Upstream: the two turns before the edited question, then the new question. Nothing of the old branch.
    assert upstream(chat_settings) == [*before[:4], ("user", "question 3, edited [[tokens:3]]")]
    # The old question is announced as off the branch, pointing at its new version.
    replaced = [f["message"] for f in frames if f["type"] == "message" and f["message"]["id"] == users[2]["id"]]
    new_user = next(
        f["message"]
        for f in frames
        if f["type"] == "message" and f["message"]["role"] == "user" and f["message"]["superseded_by"] is None
    )
    assert replaced[0]["superseded_by"] == new_user["id"]
    assert new_user["parent_id"] == users[2]["parent_id"]  # a version beside the edited one
    after_edit = await current(conversation_id)
    assert after_edit[:4] == before[:4] and after_edit[4][1] == "question 3, edited [[tokens:3]]"
    assert len(after_edit) == 6

    # The next send follows the new branch only.
    await tab.say("question 6 [[tokens:3]]", conversation_id=conversation_id)
    await tab.answer()
    assert upstream(chat_settings) == [*after_edit, ("user", "question 6 [[tokens:3]]")]
    new_branch = await current(conversation_id)

    # Back to the first version of question 3: its whole continuation, and the next send follows it.
    conversation = await Conversation.objects.aget(pk=conversation_id)
    await sync_to_async(branches.switch_branch)(conversation, users[2]["id"])
    assert await current(conversation_id) == before
    await tab.say("question 6 on the old branch [[tokens:3]]", conversation_id=conversation_id)
    await tab.answer()
    assert upstream(chat_settings) == [*before, ("user", "question 6 on the old branch [[tokens:3]]")]

    # And forth again: the new branch as it was left, with its own question 6.
    await sync_to_async(branches.switch_branch)(conversation, new_user["id"])
    assert await current(conversation_id) == new_branch


async def test_regenerate_on_a_branch_answers_that_branch(connect, owner, chat_settings):
    tab = await connect(owner)
    conversation_id, users = await five_questions(tab)
    await edit(tab, conversation_id, users[1]["id"], "question 2 again [[tokens:3]]")
    first, _ = await tab.answer()
    await tab.send(type="regenerate", conversation_id=conversation_id, client_msg_id=str(uuid.uuid4()))
    second, _ = await tab.answer()
    rows = await current(conversation_id)
    assert rows[2] == ("user", "question 2 again [[tokens:3]]") and len(rows) == 4
    assert upstream(chat_settings) == rows[:3]
    answers = await sync_to_async(
        lambda: list(Message.objects.filter(pk__in=[first["message_id"], second["message_id"]]))
    )()
    assert answers[0].parent_id == answers[1].parent_id  # two versions of one answer
    assert {a.superseded_by_id for a in answers} == {None, second["message_id"]}


async def test_an_answer_cannot_be_edited(connect, owner):
    tab = await connect(owner)
    conversation_id, _ = await five_questions(tab)
    answer = await Message.objects.filter(conversation_id=conversation_id, role="assistant").afirst()
    await edit(tab, conversation_id, answer.pk, "my version of your answer")
    error, _ = await tab.until_type("error")
    assert error["code"] == "not_editable" and "regenerate" in error["message"]
    assert await Message.objects.filter(conversation_id=conversation_id).acount() == 10


async def test_another_users_message_is_not_found(connect, owner, outsider):
    theirs = await connect(outsider)
    their_id, their_users = await five_questions(theirs)
    tab = await connect(owner)
    await tab.say("mine [[tokens:3]]")
    done, _ = await tab.answer()
    # Their message in my conversation, and their conversation with their message: both missing to me.
    for conversation_id in (done["conversation_id"], their_id):
        await edit(tab, conversation_id, their_users[0]["id"], "taken over")
        error, _ = await tab.until_type("error")
        assert error["code"] == "not_found"
    assert await Message.objects.filter(conversation_id=their_id).acount() == 10


async def test_a_question_off_the_active_branch_is_not_found(connect, owner):
    tab = await connect(owner)
    conversation_id, users = await five_questions(tab)
    await edit(tab, conversation_id, users[3]["id"], "question 4, edited [[tokens:3]]")
    await tab.answer()
    await edit(tab, conversation_id, users[4]["id"], "question 5 of a branch not shown")
    error, _ = await tab.until_type("error")
    assert error["code"] == "not_found"


async def test_an_edit_while_an_answer_runs_is_refused(connect, owner):
    tab = await connect(owner)
    conversation_id, users = await five_questions(tab)
    await tab.say("long one [[tokens:400]] [[rate:50]]", conversation_id=conversation_id)
    await tab.until_type("delta")
    await edit(tab, conversation_id, users[1]["id"], "meanwhile")
    error, _ = await tab.until_type("error")
    assert error["code"] == "busy" and error["retryable"] is True
    await tab.send(type="stop", conversation_id=conversation_id)
    await tab.answer()
    assert not await Message.objects.filter(conversation_id=conversation_id, content="meanwhile").aexists()
