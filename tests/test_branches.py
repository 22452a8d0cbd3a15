"""Branches outside the socket: the tree's migration, switching (POST /api/conversations/<id>/branch/), the versions
the API reports, bounded queries on a 50-branch, 1,000-message conversation, shares, and export/import of the tree."""

from __future__ import annotations

import importlib
import json

import pytest
from django.apps import apps
from django.core.files.uploadedfile import SimpleUploadedFile

from conversations.models import Conversation, Message
from conversations.services.history import branches, shares

pytestmark = pytest.mark.django_db

migration = importlib.import_module("conversations.migrations.0016_branches")


def say(conversation, role, content, parent=None, **fields):
    return Message.objects.create(conversation=conversation, role=role, content=content, parent=parent, **fields)


def build_tree(owner, *, branch_count: int, per_branch: int, title="Tree") -> tuple[Conversation, list[list[Message]]]:
    """Branch 0 is a thread of ``per_branch`` messages; each later branch is an edit of a question of the branch
    before it (a version beside it) followed by ``per_branch - 1`` more messages. The last branch is the active one."""
    conversation = Conversation.objects.create(owner=owner, model="kimi-k2.6", title=title)
    made: list[list[Message]] = []
    for k in range(branch_count):
        if k == 0:
            parent = None
        else:
            previous = made[k - 1]
            forked = previous[2 * (k % (per_branch // 2 - 1)) + 2 if per_branch > 4 else 0]  # a question
            parent = forked.parent
        messages = []
        for n in range(per_branch):
            role = "user" if n % 2 == 0 else "assistant"
            parent = say(conversation, role, f"b{k} m{n}", parent=parent)
            messages.append(parent)
        made.append(messages)
    branches.switch_branch(conversation, made[-1][-1].pk)
    return conversation, made


def active(conversation) -> list[str]:
    return list(conversation.messages.current().order_by("id").values_list("content", flat=True))


def switch(client, conversation, message_id, **extra):
    body = json.dumps({"message_id": message_id})
    return client.post(f"/api/conversations/{conversation.pk}/branch/", body, content_type="application/json", **extra)


# --- the migration ----------------------------------------------------------------------------------------------


def test_the_migration_links_threads_and_their_versions(owner):
    """Stored before branches: a regenerated answer, then an edited question with its new answer, then a turn."""
    conversation = Conversation.objects.create(owner=owner, model="kimi-k2.6")
    u1 = say(conversation, "user", "u1")
    a1 = say(conversation, "assistant", "a1")
    a1b = say(conversation, "assistant", "a1 regenerated")
    u2 = say(conversation, "user", "u2")
    a2 = say(conversation, "assistant", "a2")
    u2b = say(conversation, "user", "u2 edited")
    a2b = say(conversation, "assistant", "a2 to the edit")
    u3 = say(conversation, "user", "u3")
    for old, new in ((a1, a1b), (u2, u2b), (a2, a2b)):
        old.superseded_by = new
        old.save(update_fields=["superseded_by"])
    other = Conversation.objects.create(owner=owner, model="kimi-k2.6")
    lone = say(other, "user", "alone")

    migration.forward(apps, None)

    parents = dict(Message.objects.values_list("id", "parent_id"))
    assert parents[u1.pk] is None and parents[lone.pk] is None
    assert parents[a1.pk] == parents[a1b.pk] == u1.pk  # two versions of the first answer
    assert parents[u2.pk] == parents[u2b.pk] == a1b.pk  # two versions of the second question
    assert parents[a2.pk] == u2.pk and parents[a2b.pk] == u2b.pk  # each question keeps its own answer
    assert parents[u3.pk] == a2b.pk
    assert active(conversation) == ["u1", "a1 regenerated", "u2 edited", "a2 to the edit", "u3"]
    # The service's copy (imports of older files) agrees with the migration's.
    rows = list(conversation.messages.order_by("id").values_list("id", "role", "superseded_by_id"))
    assert branches.link_parents(rows) == migration.link_parents(rows)
    # And the API reports the versions it found.
    body = branches.versions_of(conversation.pk, [Message.objects.get(pk=u2b.pk)])
    assert body[u2b.pk] == {"index": 1, "count": 2, "previous": u2.pk, "next": None}


# --- switching --------------------------------------------------------------------------------------------------


def test_switching_shows_each_branch_whole_and_a_reload_keeps_it(owner_client, owner):
    conversation, made = build_tree(owner, branch_count=3, per_branch=6)
    # Branch 1 edits b0's third question (index 4), branch 2 edits b1's second (index 2).
    b0, b1, b2 = ([f"b{k} m{n}" for n in range(6)] for k in range(3))
    assert active(conversation) == [*b0[:4], *b1[:2], *b2]
    detail = owner_client.get(f"/api/conversations/{conversation.pk}/").json()
    fork = next(m for m in detail["messages"] if m["content"] == "b2 m0")
    assert fork["versions"] == {"index": 1, "count": 2, "previous": made[1][2].pk, "next": None}
    assert fork["parent_id"] == made[1][1].pk

    body = switch(owner_client, conversation, fork["versions"]["previous"]).json()
    assert [m["content"] for m in body["messages"]] == [*b0[:4], *b1]
    assert body["messages"][6]["versions"] == {"index": 0, "count": 2, "previous": None, "next": made[2][0].pk}
    again = owner_client.get(f"/api/conversations/{conversation.pk}/").json()  # a reload
    assert [m["content"] for m in again["messages"]] == [m["content"] for m in body["messages"]]

    # Up to the first fork: branch 0 with its own continuation.
    body = switch(owner_client, conversation, made[0][4].pk).json()
    assert [m["content"] for m in body["messages"]] == b0
    # Back to branch 1: the continuation it had when last shown (its own, not branch 2's).
    body = switch(owner_client, conversation, made[1][0].pk).json()
    assert [m["content"] for m in body["messages"]] == [*b0[:4], *b1]
    # A message already shown changes nothing.
    body = switch(owner_client, conversation, made[0][1].pk).json()
    assert [m["content"] for m in body["messages"]] == [*b0[:4], *b1]
    # And to branch 2 by its leaf, as a search hit could name it.
    switch(owner_client, conversation, made[2][-1].pk)
    assert active(conversation) == [*b0[:4], *b1[:2], *b2]


def test_switching_needs_the_owners_message_and_a_json_body(owner_client, owner, outsider):
    conversation, made = build_tree(owner, branch_count=2, per_branch=6)
    theirs, their_made = build_tree(outsider, branch_count=2, per_branch=6)
    before = active(conversation)
    # Their conversation, and their message in mine: both missing.
    assert switch(owner_client, theirs, their_made[0][2].pk).json()["error"]["code"] == "not_found"
    response = switch(owner_client, conversation, their_made[0][2].pk)
    assert response.status_code == 404 and response.json()["error"]["code"] == "not_found"
    for bad in ({}, {"message_id": "7"}, {"message_id": True}, {"message_id": -1}, [], {"message_id": 2**64}):
        response = owner_client.post(
            f"/api/conversations/{conversation.pk}/branch/", json.dumps(bad), content_type="application/json"
        )
        assert response.status_code == 400 and "message_id" in response.json()["error"]["message"]
    response = owner_client.post(f"/api/conversations/{conversation.pk}/branch/", "{", content_type="application/json")
    assert response.json()["error"]["code"] == "bad_json"
    response = owner_client.post(f"/api/conversations/{conversation.pk}/branch/", {"message_id": made[0][2].pk})
    assert response.status_code == 415
    assert owner_client.get(f"/api/conversations/{conversation.pk}/branch/").status_code == 405
    assert active(conversation) == before


def test_no_switch_while_an_answer_is_written(owner_client, owner):
    conversation, made = build_tree(owner, branch_count=2, per_branch=6)
    say(conversation, "assistant", "writing…", parent=made[1][-1], status="streaming")
    response = switch(owner_client, conversation, made[0][2].pk)
    assert response.status_code == 409 and response.json()["error"]["code"] == "busy"
    assert active(conversation)[-1] == "writing…"


def test_fifty_branches_and_a_thousand_messages_in_bounded_queries(
    owner_client, owner, django_assert_num_queries, django_assert_max_num_queries
):
    conversation, made = build_tree(owner, branch_count=50, per_branch=20)
    assert conversation.messages.count() == 1000
    # 1) session, 2) user, 3) the conversation, 4) a page of the branch, 5) its attachments, 6) its versions.
    with django_assert_num_queries(6):
        body = owner_client.get(f"/api/conversations/{conversation.pk}/?limit=500").json()
    assert body["messages"][-1]["content"] == "b49 m19" and not body["has_more"]
    assert sum(1 for m in body["messages"] if m["versions"]) == 49
    # The same six, plus: the row lock, the "busy?" check, the tree's ids, the two updates, and the savepoint
    # around them (a transaction of its own outside tests).
    with django_assert_max_num_queries(13):
        body = switch(owner_client, conversation, made[0][-1].pk).json()
    assert [m["content"] for m in body["messages"]] == [f"b0 m{n}" for n in range(20)]


# --- shares and exports ------------------------------------------------------------------------------------------


def test_a_share_keeps_the_branch_shown_when_it_was_made(owner_client, owner, client):
    conversation, made = build_tree(owner, branch_count=2, per_branch=6)
    link = shares.create_share(conversation)
    branches.switch_branch(conversation, made[0][4].pk)
    later = shares.create_share(conversation)
    first = client.get(f"/s/{link.token}/").content.decode()
    assert "b1 m5" in first and "b0 m4" not in first and "b0 m3" in first
    second = client.get(f"/s/{later.token}/").content.decode()
    assert "b0 m5" in second and "b1 m0" not in second


def test_export_then_import_keeps_the_tree_and_the_branch_shown(owner_client, owner, outsider, client):
    conversation, made = build_tree(owner, branch_count=4, per_branch=8)
    branches.switch_branch(conversation, made[1][-1].pk)  # not the newest branch
    exported = owner_client.get(f"/api/conversations/{conversation.pk}/export.json").content
    assert len(json.loads(exported)["messages"]) == 32  # the whole tree

    client.force_login(outsider)
    response = client.post("/api/import/", {"file": SimpleUploadedFile("tree.json", exported)})
    [copy_id] = response.json()["conversation_ids"]
    copy = Conversation.objects.get(pk=copy_id)

    def shape(conv):
        rows = list(conv.messages.order_by("id"))
        index = {m.pk: n for n, m in enumerate(rows)}
        return [(m.content, index.get(m.parent_id), m.superseded_by_id is None) for m in rows]

    assert shape(copy) == shape(conversation)
    # The copy switches like the original.
    copied = list(copy.messages.order_by("id"))
    branches.switch_branch(copy, copied[4].pk)  # b0 m4, where branch 1 starts beside it
    assert active(copy) == [f"b0 m{n}" for n in range(8)]


def test_an_export_from_before_branches_imports_as_one_thread(owner_client):
    document = {
        "format": "kimichat.conversation.v1",
        "conversation": {"id": 1, "title": "Old", "model": "kimi-k2.6"},
        "messages": [
            {"id": 1, "role": "user", "content": "q1"},
            {"id": 2, "role": "assistant", "content": "first try", "superseded_by": 3},
            {"id": 3, "role": "assistant", "content": "second try"},
            {"id": 4, "role": "user", "content": "q2"},
            {"id": 5, "role": "assistant", "content": "a2"},
        ],
    }
    response = owner_client.post(
        "/api/import/", {"file": SimpleUploadedFile("old.json", json.dumps(document).encode())}
    )
    copy = Conversation.objects.get(pk=response.json()["conversation_ids"][0])
    assert active(copy) == ["q1", "second try", "q2", "a2"]
    rows = {m.content: m for m in copy.messages.all()}
    assert rows["first try"].parent_id == rows["second try"].parent_id == rows["q1"].pk
    assert rows["q2"].parent_id == rows["second try"].pk and rows["a2"].parent_id == rows["q2"].pk
