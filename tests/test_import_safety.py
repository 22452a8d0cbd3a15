"""Imports that cannot hurt: bad dates and NUL characters are clear 400s, a second import of the same export stores
nothing twice, errors are sentences for people, other users' writes never wait for a whole import, and one user
cannot run imports back to back or several at once."""

from __future__ import annotations

import json
import threading

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import connection, connections

from conversations.models import Conversation, Message
from conversations.services.history import exports, import_limits

pytestmark = pytest.mark.django_db


def upload(client, data: bytes, name="export.json"):
    return client.post("/api/import/", {"file": SimpleUploadedFile(name, data)})


def ours(conversation=None, messages=None, **document) -> dict:
    return {
        "format": "kimichat.conversation.v1",
        "conversation": {"id": 7, "title": "Lifetimes", "model": "kimi-k2.6", "created_at": "2026-01-02T03:04:05+00:00"}
        | (conversation or {}),
        "messages": messages if messages is not None else [{"id": 1, "role": "user", "content": "q"}],
        **document,
    }


def chatgpt(conversation_id="6710-abcd", title="Squares") -> dict:
    return {
        "id": conversation_id,
        "conversation_id": conversation_id,
        "title": title,
        "create_time": 1714000000.25,
        "current_node": "a",
        "mapping": {
            "u": {"id": "u", "parent": None, "children": ["a"],
                  "message": {"author": {"role": "user"}, "content": {"content_type": "text", "parts": ["hi"]}}},
            "a": {"id": "a", "parent": "u", "children": [],
                  "message": {"author": {"role": "assistant"}, "metadata": {"model_slug": "gpt-4o"},
                              "content": {"content_type": "text", "parts": ["hello"]}}},
        },
    }  # fmt: skip


# --- dates ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "field"),
    [
        ("0001-01-01T00:00+05:00", "[0].conversation.created_at"),  # year 0 once in UTC
        ("9999-12-31T23:59-05:00", "[0].conversation.created_at"),  # year 10000 once in UTC
        (1e20, "[0].conversation.created_at"),
        (-1e15, "[0].conversation.created_at"),
    ],
)
def test_import_dates_out_of_range_are_a_400_naming_the_field(owner_client, value, field):
    response = upload(owner_client, json.dumps(ours({"created_at": value})).encode())
    assert response.status_code == 400, response.content
    error = response.json()["error"]
    assert (error["code"], error["field"]) == ("bad_import", field)
    assert error["message"].startswith("In the 1st conversation in the file, “created_at” is a date out of range")
    assert not Conversation.objects.exists()


def test_import_message_dates_out_of_range_name_the_message(owner_client):
    document = ours(messages=[{"role": "user", "content": "q", "created_at": "0001-01-01T00:00:00+14:00"}])
    response = upload(owner_client, json.dumps([ours(), document]).encode())
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["field"] == "[1].messages[0].created_at"
    assert "the 1st message of the 2nd conversation in the file" in error["message"]
    assert not Conversation.objects.exists()  # the whole file is checked before anything is stored


def test_the_earliest_and_latest_storable_dates_are_imported(owner_client):
    early = ours({"id": 1, "created_at": "0001-01-01T05:00+05:00"})
    late = ours({"id": 2, "created_at": "9999-12-31T23:59:59+00:00"})
    response = upload(owner_client, json.dumps([early, late]).encode())
    assert response.status_code == 201, response.content
    years = sorted(c.created_at.year for c in Conversation.objects.all())
    assert years == [1, 9999]


# --- errors for people ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b'[{"x": 1}]', "The 1st conversation in the file is neither a KimiChat export nor a ChatGPT export."),
        (b"{nope", "The file is not valid JSON ("),
        (b"[]", "The file holds no conversations."),
        (b"PK\x03\x04 broken", "The file is not a valid ZIP archive."),
        (json.dumps([ours(), ours(messages=[{"role": "robot"}])]).encode(),
         "In the 1st message of the 2nd conversation in the file, “role” must be user, assistant or system."),
        (json.dumps([ours({"title": 5})]).encode(), "In the 1st conversation in the file, “title” must be text."),
    ],
)  # fmt: skip
def test_import_errors_are_sentences_for_people(owner_client, data, message):
    response = upload(owner_client, data)
    assert response.status_code == 400
    assert response.json()["error"]["message"].startswith(message)


# --- NUL characters ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("document", "field"),
    [
        (ours({"title": "a\x00b"}), "[0].conversation.title"),
        (ours({"system_prompt": "\x00"}), "[0].conversation.system_prompt"),
        (ours(messages=[{"role": "user", "content": "x\x00"}]), "[0].messages[0].content"),
        (ours(messages=[{"role": "assistant", "content": "x", "reasoning": "\x00"}]), "[0].messages[0].reasoning"),
        (chatgpt(title="\x00"), "[0].title"),
    ],
)
def test_import_refuses_nul_characters_naming_the_field(owner_client, document, field):
    response = upload(owner_client, json.dumps([document]).encode())
    assert response.status_code == 400, response.content
    error = response.json()["error"]
    assert (error["code"], error["field"]) == ("bad_import", field)
    assert "NUL character" in error["message"]
    assert not Conversation.objects.exists()


# --- idempotent by the exported ids -----------------------------------------------------------------------------


def test_importing_the_same_export_twice_stores_each_conversation_once(owner_client, owner, outsider):
    data = json.dumps([ours(), ours({"id": 8, "title": "Second"}), chatgpt()]).encode()
    first = upload(owner_client, data)
    assert first.status_code == 201 and first.json()["imported"] == 3
    again = upload(owner_client, data)
    assert again.status_code == 200, again.content
    body = again.json()
    assert (body["imported"], body["skipped"]) == (0, 3)
    assert sorted(body["skipped_ids"]) == sorted(first.json()["conversation_ids"])
    assert Conversation.objects.filter(owner=owner).count() == 3
    assert Message.objects.filter(conversation__owner=owner).count() == 4
    # The key is per user: someone else importing the same file gets their own copies.
    other = Client_for(outsider)
    assert upload(other, data).json()["imported"] == 3


def test_a_partly_imported_file_is_completed_by_importing_it_again(owner_client, owner):
    upload(owner_client, json.dumps([ours()]).encode())
    body = upload(owner_client, json.dumps([ours(), ours({"id": 8, "title": "Second"})]).encode()).json()
    assert (body["imported"], body["skipped"]) == (1, 1)
    assert sorted(Conversation.objects.values_list("title", flat=True)) == ["Lifetimes", "Second"]


def test_the_same_ids_from_another_export_time_are_another_conversation(owner_client):
    upload(owner_client, json.dumps([ours()]).encode())
    # Another server's conversation 7 was created at another moment: not the same conversation.
    body = upload(owner_client, json.dumps([ours({"created_at": "2025-05-05T00:00:00+00:00"})]).encode()).json()
    assert body["imported"] == 1


def test_imported_chatgpt_conversations_keep_their_source_model(owner_client):
    [conversation_id] = upload(owner_client, json.dumps([chatgpt()]).encode()).json()["conversation_ids"]
    conversation = Conversation.objects.get(pk=conversation_id)
    assert conversation.model == "gpt-4o"
    assert list(conversation.messages.filter(role="assistant").values_list("model", flat=True)) == ["gpt-4o"]


def test_export_file_names_keep_chinese_titles(owner_client, owner):
    conversation = Conversation.objects.create(owner=owner, title="量子计算 笔记", model="kimi-k2.6")
    for ext in ("md", "json"):
        header = owner_client.get(f"/api/conversations/{conversation.pk}/export.{ext}")["Content-Disposition"]
        assert f"filename*=utf-8''kimichat-{conversation.pk}-%E9%87%8F%E5%AD%90%E8%AE%A1%E7%AE%97-" in header
        assert f'filename="kimichat-{conversation.pk}-conversation.{ext}"' in header  # for clients without filename*


def Client_for(user):  # noqa: N802 - reads like the class it makes
    from django.test import Client

    client = Client()
    client.force_login(user)
    return client


# --- other users' writes never wait for a whole import (SQLite's one write lock) ---------------------------------


@pytest.mark.django_db(transaction=True)
def test_other_users_can_write_while_an_import_is_being_stored(owner, outsider):
    """Between two of the import's transactions another connection writes with a short lock timeout. With the file
    written in one transaction that write waited for the whole import (and failed after SQLite's 20 s timeout).
    SQLite only: it has one write lock per database (PostgreSQL locks rows, and another user's rows never wait)."""
    if connection.vendor != "sqlite":
        pytest.skip("PostgreSQL locks rows: another user's insert never waits for an import")
    theirs = Conversation.objects.create(owner=outsider, model="kimi-k2.6", title="theirs")
    per_conversation = 300
    documents = [
        ours({"id": n, "title": f"c{n}"}, [{"role": "user", "content": f"m{i}"} for i in range(per_conversation)])
        for n in range(12)
    ]
    outcomes: list[str] = []

    def write_elsewhere():
        try:
            connections["default"].ensure_connection()
            connections["default"].connection.execute("PRAGMA busy_timeout = 300")
            Message.objects.create(conversation=theirs, role="user", content="still here")
            outcomes.append("written")
        except Exception as exc:  # noqa: BLE001 - the outcome is the assertion
            outcomes.append(repr(exc))
        finally:
            connections.close_all()

    begins = 0

    def during_import(execute, sql, params, many, context):
        nonlocal begins
        if sql.startswith("BEGIN"):  # IMMEDIATE (settings): the write lock is taken here
            begins += 1
            if begins == 2:  # before the second transaction: the first must be committed and its lock released
                other = threading.Thread(target=write_elsewhere)
                other.start()
                other.join()
        return execute(sql, params, many, context)

    with connection.execute_wrapper(during_import):
        result = exports.import_conversations(owner, json.dumps(documents).encode())
    assert len(result.imported) == 12
    assert outcomes == ["written"]
    assert Message.objects.filter(conversation=theirs).count() == 1


def test_a_conversation_larger_than_a_batch_is_stored_in_several_transactions(owner, monkeypatch):
    monkeypatch.setattr(exports, "STORE_BATCH_MESSAGES", 50)
    messages = [{"id": i, "role": "user", "content": f"m{i}"} for i in range(120)]
    messages[0]["superseded_by"] = 119  # a version link across chunks
    result = exports.import_conversations(owner, json.dumps([ours(messages=messages)]).encode())
    [conversation] = Conversation.objects.filter(pk__in=result.imported)
    assert conversation.messages.count() == 120 and conversation.import_key.startswith("kimichat:7:")
    first = conversation.messages.order_by("id").first()
    assert first.superseded_by == conversation.messages.order_by("id").last()


# --- limits per user and per process ----------------------------------------------------------------------------


def test_imports_are_rate_limited_per_user(owner_client, outsider, monkeypatch):
    monkeypatch.setattr(import_limits, "IMPORTS_PER_HOUR", 2)
    for n in range(2):
        assert upload(owner_client, json.dumps([ours({"id": n})]).encode()).status_code == 201
    refused = upload(owner_client, json.dumps([ours({"id": 99})]).encode())
    assert refused.status_code == 429
    assert refused.json()["error"]["code"] == "rate_limited" and int(refused["Retry-After"]) > 0
    assert not Conversation.objects.filter(title="Lifetimes", import_key__contains=":99:").exists()
    assert upload(Client_for(outsider), json.dumps([ours()]).encode()).status_code == 201  # per user


def test_one_import_at_a_time_per_user(owner_client, owner):
    from django.core.cache import cache

    cache.add(f"import:running:{owner.pk}", 1, 60)  # as an import in another request holds it
    refused = upload(owner_client, json.dumps([ours()]).encode())
    assert refused.status_code == 429 and refused.json()["error"]["code"] == "rate_limited"
    assert not Conversation.objects.exists()


def test_a_process_runs_a_bounded_number_of_imports_at_once(owner_client, monkeypatch):
    slots = threading.BoundedSemaphore(1)
    monkeypatch.setattr(import_limits, "_process_slots", slots)
    slots.acquire()  # another user's import is running in this process
    try:
        refused = upload(owner_client, json.dumps([ours()]).encode())
    finally:
        slots.release()
    assert refused.status_code == 503 and refused.json()["error"]["code"] == "server_busy"
    assert upload(owner_client, json.dumps([ours()]).encode()).status_code == 201  # not counted against the user


@pytest.mark.django_db(transaction=True)
def test_an_import_runs_off_the_thread_the_workers_other_requests_share(owner_client, monkeypatch):
    """Sync views and every socket's database calls share one thread per process (thread-sensitive sync_to_async,
    here the test's main thread): a 20 MB import there stalled them all for its whole duration."""
    threads = []
    real = exports.import_conversations

    def spy(user, data):
        threads.append(threading.get_ident())
        return real(user, data)

    monkeypatch.setattr(exports, "import_conversations", spy)
    assert upload(owner_client, json.dumps([ours()]).encode()).status_code == 201
    assert threads and threads[0] != threading.get_ident()
    assert Conversation.objects.filter(title="Lifetimes").count() == 1  # committed, visible from here
