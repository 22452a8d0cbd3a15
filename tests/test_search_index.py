"""The search index holds finished messages only (migration 0003): checkpoints of a streaming answer cost no index
work, and the answer is indexed when it ends, whichever way it ends."""

from __future__ import annotations

import pytest
from django.db import connection

from conversations.models import Conversation, Message
from conversations.services.chat.reaper import reap_message
from conversations.services.chat.storing import checkpoint, finish_message

pytestmark = pytest.mark.django_db


def indexed(message_id: int) -> bool:
    """Does the index (SQLite FTS5, PostgreSQL's generated tsvector) find the word "zyx" in this message?"""
    with connection.cursor() as cursor:
        if connection.vendor == "sqlite":
            # An external-content FTS5 table reads its text from the message row: ask the index itself.
            cursor.execute(
                "SELECT count(*) FROM conversations_message_fts WHERE conversations_message_fts MATCH 'zyx' "
                "AND rowid = %s",
                [message_id],
            )
        else:
            cursor.execute(
                "SELECT count(*) FROM conversations_message WHERE id = %s "
                "AND content_search @@ to_tsquery('simple'::regconfig, 'zyx')",
                [message_id],
            )
        return cursor.fetchone()[0] == 1


def integrity_check() -> None:
    if connection.vendor == "sqlite":
        with connection.cursor() as cursor:  # raises if the index and the final rows disagree
            cursor.execute(
                "INSERT INTO conversations_message_fts(conversations_message_fts, rank) VALUES ('integrity-check', 1)"
            )


@pytest.fixture
def answer(owner):
    conversation = Conversation.objects.create(owner=owner, model="kimi-k2.6")
    Message.objects.create(conversation=conversation, role="user", content="question zyx", status="complete")
    return Message.objects.create(conversation=conversation, role="assistant", status="streaming")


def test_a_streaming_answer_is_indexed_only_when_it_ends(answer):
    checkpoint([(answer.pk, "partial zyx text", "", 3)])
    assert not indexed(answer.pk)
    checkpoint([(answer.pk, "partial zyx text and more", "", 5)])
    assert not indexed(answer.pk)
    finish_message(answer.pk, status="complete", content="final zyx text", reasoning="", seq=6)
    assert indexed(answer.pk)
    integrity_check()


def test_an_answer_cut_off_by_the_reaper_is_indexed_with_its_checkpoint(answer):
    checkpoint([(answer.pk, "checkpointed zyx", "", 2)])
    message, _balance = reap_message(answer.pk)
    assert message.status == "interrupted"
    assert indexed(answer.pk)
    integrity_check()


def test_finished_messages_are_reindexed_when_edited_and_removed_when_deleted(answer):
    finish_message(answer.pk, status="complete", content="first zyx", reasoning="", seq=1)
    Message.objects.filter(pk=answer.pk).update(content="no longer")
    assert not indexed(answer.pk)
    Message.objects.filter(pk=answer.pk).update(content="again zyx")
    assert indexed(answer.pk)
    integrity_check()
    Message.objects.filter(pk=answer.pk).delete()
    integrity_check()


def test_messages_stored_final_are_indexed_at_once(answer):
    user_message = Message.objects.filter(conversation=answer.conversation, role="user").get()
    assert indexed(user_message.pk)


def test_a_continued_answer_leaves_the_index_while_it_streams_again(answer):
    finish_message(answer.pk, status="complete", content="cut zyx", reasoning="", seq=2, finish_reason="length")
    assert indexed(answer.pk)
    Message.objects.filter(pk=answer.pk).update(status="streaming", finish_reason="")  # what a Continue does
    assert not indexed(answer.pk)
    checkpoint([(answer.pk, "cut zyx and then", "", 3)])
    finish_message(answer.pk, status="complete", content="cut zyx and then some", reasoning="", seq=4)
    assert indexed(answer.pk)
    integrity_check()
    Message.objects.filter(pk=answer.pk).delete()
    integrity_check()


def test_a_checkpoint_writes_every_running_answer_and_leaves_an_ended_one_as_stored(answer):
    """``checkpoint`` is one statement run for all rows (executemany): each running answer gets its own text and
    seq; an answer that ended meanwhile keeps what its final store wrote."""
    second = Message.objects.create(conversation=answer.conversation, role="assistant", status="streaming")
    ended = Message.objects.create(conversation=answer.conversation, role="assistant", status="streaming")
    finish_message(ended.pk, status="complete", content="the end", reasoning="", seq=9)
    checkpoint([(answer.pk, "one so far", "", 3), (second.pk, "two so far", "thinking", 4), (ended.pk, "late", "", 2)])
    rows = Message.objects.filter(pk__in=[answer.pk, second.pk, ended.pk]).order_by("pk")
    assert list(rows.values_list("content", "reasoning", "seq", "status")) == [
        ("one so far", "", 3, "streaming"),
        ("two so far", "thinking", 4, "streaming"),
        ("the end", "", 9, "complete"),
    ]
