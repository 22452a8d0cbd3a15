"""The data model's query helpers: scoped to the user, ordered for the sidebar, indexes named."""

import pytest
from django.db import IntegrityError
from django.utils import timezone

from conversations.models import Conversation, Message

pytestmark = pytest.mark.django_db


def make_conversation(user, title="t", **fields):
    return Conversation.objects.create(owner=user, title=title, model="kimi-k2.6", **fields)


def test_for_user_returns_only_the_users_rows(owner, outsider):
    mine = make_conversation(owner, "mine")
    make_conversation(outsider, "theirs")
    assert list(Conversation.objects.for_user(owner)) == [mine]


def test_for_user_with_anonymous_is_empty(owner):
    from django.contrib.auth.models import AnonymousUser

    make_conversation(owner)
    assert Conversation.objects.for_user(AnonymousUser()).count() == 0
    assert Conversation.objects.for_user(None).count() == 0


def test_sidebar_order_is_pinned_first_then_newest(owner):
    now = timezone.now()
    old_pinned = make_conversation(owner, "old pinned", pinned=True, updated_at=now - timezone.timedelta(days=3))
    newest = make_conversation(owner, "newest", updated_at=now)
    older = make_conversation(owner, "older", updated_at=now - timezone.timedelta(days=1))
    make_conversation(owner, "archived", archived=True, updated_at=now)
    assert list(Conversation.objects.for_user(owner).for_sidebar()) == [old_pinned, newest, older]
    assert [c.title for c in Conversation.objects.for_user(owner).for_sidebar(archived=True)] == ["archived"]


def test_messages_current_leaves_out_earlier_versions(owner):
    conversation = make_conversation(owner)
    Message.objects.create(conversation=conversation, role="user", content="q")
    first = Message.objects.create(conversation=conversation, role="assistant", content="a1")
    second = Message.objects.create(conversation=conversation, role="assistant", content="a2")
    first.superseded_by = second
    first.save()
    assert [m.content for m in conversation.messages.current().order_by("id")] == ["q", "a2"]
    assert list(second.earlier_versions.all()) == [first]


def test_in_progress_and_message_scoping(owner, outsider):
    conversation = make_conversation(owner)
    streaming = Message.objects.create(conversation=conversation, role="assistant", status="streaming")
    Message.objects.create(conversation=conversation, role="assistant", status="complete")
    assert list(Message.objects.in_progress()) == [streaming]
    assert Message.objects.for_user(outsider).count() == 0
    assert Message.objects.for_user(owner).count() == 2


def test_client_msg_id_is_unique(owner):
    import uuid

    conversation = make_conversation(owner)
    key = uuid.uuid4()
    Message.objects.create(conversation=conversation, role="user", content="x", client_msg_id=key)
    Message.objects.create(conversation=conversation, role="user", content="no id")
    Message.objects.create(conversation=conversation, role="user", content="no id either")
    with pytest.raises(IntegrityError):
        Message.objects.create(conversation=conversation, role="user", content="y", client_msg_id=key)


def test_named_indexes_exist():
    names = {index.name for index in Conversation._meta.indexes} | {index.name for index in Message._meta.indexes}
    assert {"conv_owner_pin_updated", "conv_owner_updated", "msg_conversation_id", "msg_in_progress"} <= names
