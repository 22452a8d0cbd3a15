"""Exports (Markdown, JSON, ZIP of everything) and imports (our format, our ZIP, ChatGPT's conversations.json)."""

import io
import json
import zipfile
from decimal import Decimal

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client
from django.utils import timezone

from conversations.models import Conversation, Message
from conversations.services.history import exports

pytestmark = pytest.mark.django_db

CSRF_TOKEN = "e" * 32


def make_conversation(owner, title="Rust lifetimes", **fields):
    return Conversation.objects.create(owner=owner, title=title, model="kimi-k2.6", **fields)


def say(conversation, role, content, **fields):
    return Message.objects.create(conversation=conversation, role=role, content=content, **fields)


@pytest.fixture
def conversation_with_versions(owner):
    """A question, a first answer that was regenerated, and the answer that replaced it."""
    conversation = make_conversation(owner, system_prompt="Be concise.", temperature=0.4, pinned=True)
    question = say(conversation, "user", "What does 'a mean?")
    first = say(conversation, "assistant", "It is a lifetime.", model="kimi-k2.6", status="complete", parent=question)
    second = say(
        conversation,
        "assistant",
        "`'a` names a **lifetime**.",
        parent=question,
        reasoning="The user asks about Rust syntax.\nKeep it short.",
        model="kimi-k2-thinking",
        prompt_tokens=12,
        completion_tokens=30,
        total_tokens=42,
        cost=Decimal("0.0123"),
        finish_reason="stop",
        completed_at=timezone.now(),
    )
    first.superseded_by = second
    first.save(update_fields=["superseded_by"])
    return conversation


def upload(client, data: bytes, name="export.json", **extra):
    return client.post("/api/import/", {"file": SimpleUploadedFile(name, data)}, **extra)


# --- export ---------------------------------------------------------------------------------------------------


def test_markdown_export(owner_client, conversation_with_versions):
    conversation = conversation_with_versions
    response = owner_client.get(f"/api/conversations/{conversation.pk}/export.md")
    assert response.status_code == 200 and response["Content-Type"].startswith("text/markdown")
    assert response["Content-Disposition"] == f'attachment; filename="kimichat-{conversation.pk}-rust-lifetimes.md"'
    text = response.content.decode()
    assert text.startswith("# Rust lifetimes\n")
    assert "## User\n\nWhat does 'a mean?" in text
    assert "## Assistant (kimi-k2-thinking)" in text and "`'a` names a **lifetime**." in text
    assert "<details><summary>Reasoning</summary>\n\n> The user asks about Rust syntax.\n> Keep it short." in text
    assert "12 prompt · 30 completion · 42 total" in text
    assert "> Be concise." in text
    # Only the current thread: the replaced first answer is not in the document.
    assert "It is a lifetime." not in text


def test_json_export_has_every_version(owner_client, conversation_with_versions):
    conversation = conversation_with_versions
    response = owner_client.get(f"/api/conversations/{conversation.pk}/export.json")
    assert response.status_code == 200 and response["Content-Type"] == "application/json"
    assert response["Content-Disposition"].endswith('.json"')
    document = response.json()
    assert document["format"] == "kimichat.conversation.v1"
    assert document["conversation"]["title"] == "Rust lifetimes"
    assert document["conversation"]["settings"]["temperature"] == 0.4
    roles = [(m["role"], m["content"][:8]) for m in document["messages"]]
    assert roles == [("user", "What doe"), ("assistant", "It is a "), ("assistant", "`'a` nam")]
    first, second = document["messages"][1:]
    assert first["superseded_by"] == second["id"] and second["superseded_by"] is None
    assert second["usage"]["total_tokens"] == 42 and second["reasoning"].startswith("The user")


def test_unicode_titles_get_a_safe_filename(owner_client, owner):
    conversation = make_conversation(owner, "量子计算 notes")
    response = owner_client.get(f"/api/conversations/{conversation.pk}/export.md")
    assert f"kimichat-{conversation.pk}-notes.md" in response["Content-Disposition"]


def test_zip_of_everything_is_only_mine(owner_client, owner, outsider, conversation_with_versions):
    make_conversation(owner, "Second one", archived=True)
    make_conversation(outsider, "Not yours")
    response = owner_client.get("/api/export/all.zip")
    assert response.status_code == 200
    assert 'filename="kimichat-conversations.zip"' in response["Content-Disposition"]
    archive = zipfile.ZipFile(io.BytesIO(b"".join(response.streaming_content)))
    documents = [json.loads(archive.read(name)) for name in archive.namelist()]
    assert sorted(d["conversation"]["title"] for d in documents) == ["Rust lifetimes", "Second one"]
    assert all(d["format"] == "kimichat.conversation.v1" for d in documents)


def test_zip_export_has_a_cap(owner_client, owner, monkeypatch):
    say(make_conversation(owner), "user", "x" * 2000)
    monkeypatch.setattr(exports, "MAX_EXPORT_BYTES", 1000)
    response = owner_client.get("/api/export/all.zip")
    assert response.status_code == 413 and response.json()["error"]["code"] == "too_large"


def test_zip_export_query_count(owner_client, owner, django_assert_num_queries):
    conversations = Conversation.objects.bulk_create(
        Conversation(owner=owner, title=f"c{i}", model="m") for i in range(250)
    )
    Message.objects.bulk_create(Message(conversation=c, role="user", content="hi") for c in conversations)
    # 1) session, 2) user, 3) conversations, 4) projects (none: their files are not asked for), 5-8) messages and
    # their attachments for two chunks of 200.
    with django_assert_num_queries(8):
        response = owner_client.get("/api/export/all.zip")
    archive = zipfile.ZipFile(io.BytesIO(b"".join(response.streaming_content)))
    assert len(archive.namelist()) == 250


@pytest.mark.parametrize("suffix", ["export.md", "export.json"])
def test_exports_are_404_for_outsiders_and_401_for_anonymous(client, owner, outsider, suffix):
    conversation = make_conversation(owner)
    assert client.get(f"/api/conversations/{conversation.pk}/{suffix}").status_code == 401
    client.force_login(outsider)
    response = client.get(f"/api/conversations/{conversation.pk}/{suffix}")
    assert response.status_code == 404 and response.json()["error"]["code"] == "not_found"


def test_zip_and_import_need_a_login(client):
    assert client.get("/api/export/all.zip").status_code == 401
    assert upload(client, b"{}").status_code == 401


# --- import: our own format -------------------------------------------------------------------------------------


def test_round_trip_export_then_import(owner_client, owner, outsider, conversation_with_versions):
    original = conversation_with_versions
    data = owner_client.get(f"/api/conversations/{original.pk}/export.json").content
    # Another user imports it: a copy of their own, with fresh ids.
    other = Client()
    other.force_login(outsider)
    response = upload(other, data)
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["imported"] == 1
    [new_id] = body["conversation_ids"]
    copy = Conversation.objects.get(pk=new_id)
    assert copy.owner == outsider and copy.pk != original.pk
    assert (copy.title, copy.system_prompt, copy.temperature, copy.pinned) == (
        "Rust lifetimes",
        "Be concise.",
        0.4,
        True,
    )
    assert copy.created_at == original.created_at
    old = list(original.messages.order_by("id"))
    new = list(copy.messages.order_by("id"))
    assert [(m.role, m.content, m.reasoning, m.model) for m in new] == [
        (m.role, m.content, m.reasoning, m.model) for m in old
    ]
    assert not {m.pk for m in new} & {m.pk for m in old}
    assert all(m.status == "complete" for m in new)
    # Versions point at the new rows; usage and cost are not carried over.
    assert new[1].superseded_by_id == new[2].pk and new[2].superseded_by_id is None
    assert new[2].total_tokens == 0 and new[2].cost == 0
    # And the API shows the same current thread as the original.
    thread = owner_client.get(f"/api/conversations/{original.pk}/").json()["messages"]
    copied = other.get(f"/api/conversations/{copy.pk}/").json()["messages"]
    assert [m["content"] for m in copied] == [m["content"] for m in thread]


def test_round_trip_of_the_zip(owner_client, owner, conversation_with_versions):
    say(make_conversation(owner, "Another"), "user", "hello there")
    archive = b"".join(owner_client.get("/api/export/all.zip").streaming_content)
    body = upload(owner_client, archive, name="all.zip").json()
    assert body["imported"] == 2
    titles = set(Conversation.objects.filter(pk__in=body["conversation_ids"]).values_list("title", flat=True))
    assert titles == {"Rust lifetimes", "Another"}


def test_ids_in_the_file_are_never_used(owner_client, owner, outsider):
    victim = make_conversation(outsider, "Outsider's")
    victim_message = say(victim, "user", "private")
    document = {
        "format": "kimichat.conversation.v1",
        "conversation": {"id": victim.pk, "title": "Imported", "model": "kimi-k2.6", "owner": outsider.pk},
        "messages": [
            {"id": victim_message.pk, "role": "user", "content": "q"},
            {"id": 5, "role": "assistant", "content": "a", "superseded_by": victim_message.pk, "status": "streaming"},
        ],
    }
    [new_id] = upload(owner_client, json.dumps(document).encode()).json()["conversation_ids"]
    copy = Conversation.objects.get(pk=new_id)
    assert copy.owner == owner and copy.pk != victim.pk
    question, answer = copy.messages.order_by("id")
    # The answer names the question as its successor, but a successor must come later in the file.
    assert answer.superseded_by_id is None and answer.status == "complete"
    victim_message.refresh_from_db()
    assert victim_message.conversation_id == victim.pk and victim_message.superseded_by_id is None


# --- import: ChatGPT ----------------------------------------------------------------------------------------------


def _node(node_id, parent, children, role=None, parts=None, created=None, **message_extra):
    message = None
    if role is not None:
        message = {
            "id": node_id,
            "author": {"role": role, "name": None, "metadata": {}},
            "create_time": created,
            "update_time": None,
            "content": message_extra.pop("content", {"content_type": "text", "parts": parts or []}),
            "status": "finished_successfully",
            "end_turn": True,
            "weight": 1.0,
            "metadata": message_extra.pop("metadata", {}),
            "recipient": "all",
        }
    return {"id": node_id, "message": message, "parent": parent, "children": children}


CHATGPT_EXPORT = [
    {
        "title": "Squaring a list in Python",
        "create_time": 1714000000.25,
        "update_time": 1714000900.5,
        "mapping": {
            "root": _node("root", None, ["sys"]),
            "sys": _node(
                "sys",
                "root",
                ["u1"],
                role="system",
                parts=[""],
                metadata={"is_visually_hidden_from_conversation": True},
            ),
            "u1": _node(
                "u1",
                "sys",
                ["a1-old", "a1"],
                role="user",
                parts=["How do I square every number in a list?"],
                created=1714000001.0,
            ),
            "a1-old": _node(
                "a1-old", "u1", [], role="assistant", parts=["Use a for loop (old branch)."], created=1714000002.0
            ),
            "a1": _node(
                "a1",
                "u1",
                ["u2"],
                role="assistant",
                parts=["Use a list comprehension:\n\n```python\nsquares = [x * x for x in xs]\n```"],
                created=1714000003.0,
                metadata={"model_slug": "gpt-4o"},
            ),
            "u2": _node("u2", "a1", ["tool"], role="user", parts=["And only the positive ones?"], created=1714000004.0),
            "tool": _node(
                "tool",
                "u2",
                ["a2"],
                role="tool",
                created=1714000005.0,
                content={"content_type": "execution_output", "text": "[1, 4]"},
            ),
            "a2": _node(
                "a2",
                "tool",
                [],
                role="assistant",
                parts=[
                    "Add a condition: `[x * x for x in xs if x > 0]`",
                    {"content_type": "image_asset_pointer", "asset_pointer": "file-service://x"},
                ],
                created=1714000006.0,
                metadata={"model_slug": "gpt-4o"},
            ),
        },
        "moderation_results": [],
        "current_node": "a2",
        "plugin_ids": None,
        "conversation_id": "6629a1b2-0000-0000-0000-000000000001",
        "default_model_slug": "gpt-4o",
        "id": "6629a1b2-0000-0000-0000-000000000001",
    },
    {
        "title": "为什么天空是蓝色的",
        "create_time": 1714100000,
        "update_time": None,
        "mapping": {
            "r": _node("r", None, ["q"]),
            "q": _node("q", "r", ["think"], role="user", parts=["为什么天空是蓝色的？"], created=1714100001),
            "think": _node(
                "think",
                "q",
                ["ans"],
                role="assistant",
                created=1714100002,
                content={"content_type": "thoughts", "thoughts": [{"summary": "Rayleigh", "content": "瑞利散射。"}]},
            ),
            "ans": _node(
                "ans",
                "think",
                [],
                role="assistant",
                parts=["因为瑞利散射。"],
                created=1714100003,
                metadata={"model_slug": "o1"},
            ),
        },
        # No current_node: the newest leaf is the thread.
        "id": "6629a1b2-0000-0000-0000-000000000002",
    },
]


def test_chatgpt_import_follows_the_current_branch(owner_client, owner, settings):
    response = upload(owner_client, json.dumps(CHATGPT_EXPORT).encode(), name="conversations.json")
    assert response.status_code == 201, response.content
    first_id, second_id = response.json()["conversation_ids"]
    first = Conversation.objects.get(pk=first_id)
    assert first.owner == owner and first.title == "Squaring a list in Python"
    assert first.model == "gpt-4o"  # the source model, as its answers say (not this server's default)
    assert first.created_at.timestamp() == pytest.approx(1714000000.25)
    assert first.updated_at.timestamp() == pytest.approx(1714000900.5)
    thread = [(m.role, m.content, m.model) for m in first.messages.order_by("id")]
    assert thread == [
        ("user", "How do I square every number in a list?", ""),
        ("assistant", "Use a list comprehension:\n\n```python\nsquares = [x * x for x in xs]\n```", "gpt-4o"),
        ("user", "And only the positive ones?", ""),
        ("assistant", "Add a condition: `[x * x for x in xs if x > 0]`", "gpt-4o"),
    ]
    assert all(m.status == "complete" for m in first.messages.all())
    second = Conversation.objects.get(pk=second_id)
    question, answer = second.messages.order_by("id")
    assert (question.content, answer.content, answer.reasoning) == (
        "为什么天空是蓝色的？",
        "因为瑞利散射。",
        "瑞利散射。",
    )
    # Imported text is searchable like any other.
    hits = owner_client.get("/api/search/", {"q": "comprehension"}).json()["results"]
    assert [h["conversation_id"] for h in hits] == [first_id]


# --- import: validation ---------------------------------------------------------------------------------------------


def ours(conversation=None, messages=None) -> bytes:
    """A kimichat.conversation.v1 document with the given parts."""
    document = {"format": "kimichat.conversation.v1", "conversation": conversation, "messages": messages}
    return json.dumps(document).encode()


@pytest.mark.parametrize(
    ("data", "code", "field"),
    [
        (b"{not json", "bad_json", None),
        (b"[]", "bad_import", None),
        (b'{"hello": "world"}', "bad_format", "[0]"),
        (b'[{"format": "something.else"}]', "bad_import", "[0]"),
        (ours([], []), "bad_import", "[0].conversation"),
        (ours({}, {}), "bad_import", "[0].messages"),
        (ours({}, [{"role": "admin", "content": "x"}]), "bad_import", "[0].messages[0].role"),
        (ours({}, [{"role": "user", "content": 5}]), "bad_import", "[0].messages[0].content"),
        (ours({"created_at": "yesterday"}, []), "bad_import", "[0].conversation.created_at"),
        (ours({"settings": [1]}, []), "bad_import", "[0].conversation.settings"),
        (ours({}, [{"role": "user", "id": [1]}]), "bad_import", "[0].messages[0].id"),
        (ours({}, ["hello"]), "bad_import", "[0].messages[0]"),
        (b'[{"title": "x", "mapping": []}]', "bad_import", "[0]"),
        (b"PK\x03\x04 not really a zip", "bad_file", None),
    ],
)
def test_import_rejects_bad_files_with_clear_errors(owner_client, owner, data, code, field):
    response = upload(owner_client, data)
    assert response.status_code == 400, response.content
    error = response.json()["error"]
    assert error["code"] == code and error["message"]
    assert error.get("field") == field
    assert not Conversation.objects.filter(owner=owner).exists()


def test_import_is_all_or_nothing(owner_client, owner):
    good = {"format": "kimichat.conversation.v1", "conversation": {"title": "ok"}, "messages": []}
    bad = {"format": "kimichat.conversation.v1", "conversation": {}, "messages": [{"role": "wizard"}]}
    assert upload(owner_client, json.dumps([good, bad]).encode()).status_code == 400
    assert not Conversation.objects.filter(owner=owner).exists()


def test_import_needs_the_file_field(owner_client):
    response = owner_client.post("/api/import/", {"other": "x"})
    assert response.status_code == 400 and response.json()["error"]["field"] == "file"


def test_import_size_and_count_caps(owner_client, owner, monkeypatch):
    document = {"format": "kimichat.conversation.v1", "conversation": {"title": "t"}, "messages": []}
    monkeypatch.setattr(exports, "MAX_IMPORT_CONVERSATIONS", 2)
    response = upload(owner_client, json.dumps([document] * 3).encode())
    assert response.status_code == 413 and response.json()["error"]["code"] == "too_large"
    monkeypatch.setattr(exports, "MAX_IMPORT_BYTES", 50)
    response = upload(owner_client, json.dumps(document).encode())
    assert response.status_code == 413 and response.json()["error"]["code"] == "too_large"
    assert not Conversation.objects.filter(owner=owner).exists()


def test_zip_that_expands_too_far_is_refused(owner_client, owner, monkeypatch):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("big.json", json.dumps({"format": "kimichat.conversation.v1", "pad": " " * 100_000}))
    monkeypatch.setattr(exports, "MAX_IMPORT_BYTES", 10_000)
    response = upload(owner_client, buffer.getvalue(), name="bomb.zip")
    assert len(buffer.getvalue()) < 10_000
    assert response.status_code == 413 and response.json()["error"]["code"] == "too_large"


def test_import_needs_the_csrf_token(owner):
    client = Client(enforce_csrf_checks=True)
    client.force_login(owner)
    client.cookies["csrftoken"] = CSRF_TOKEN
    data = json.dumps({"format": "kimichat.conversation.v1", "conversation": {}, "messages": []}).encode()
    assert upload(client, data).status_code == 403
    assert not Conversation.objects.filter(owner=owner).exists()
    assert upload(client, data, HTTP_X_CSRFTOKEN=CSRF_TOKEN).status_code == 201
