"""Attachments in history: the API lists them, search leaves document text out, share pages show names only,
exports list them; and the estimate of a message with its attachments before sending."""

from decimal import Decimal

import orjson
import pytest
from django.test import Client

from conversations.models import Attachment, Conversation, Message
from conversations.services.attachments import uploads
from conversations.services.billing import pricing
from conversations.services.history import shares

pytestmark = pytest.mark.django_db

DOC_TEXT = "zebracorn quarterly figures"


@pytest.fixture
def sent(local_extraction, owner):
    """A conversation whose user message carries a document."""
    conversation = Conversation.objects.create(owner=owner, model="kimi-k2.6", title="With a file")
    message = Message.objects.create(conversation=conversation, role="user", content="see the file")
    Message.objects.create(conversation=conversation, role="assistant", content="read it", parent=message)
    attachment = uploads.create_attachment(owner, name="figures.txt", data=DOC_TEXT.encode())
    Attachment.objects.filter(pk=attachment.pk).update(message=message)
    return conversation, message, attachment


def test_the_api_lists_a_messages_attachments(sent, csrf_client, owner):
    conversation, message, attachment = sent
    body = csrf_client(owner).get(f"/api/conversations/{conversation.pk}/").json()
    user = next(m for m in body["messages"] if m["id"] == message.pk)
    assert [(a["id"], a["name"], a["kind"]) for a in user["attachments"]] == [
        (attachment.pk, "figures.txt", "document")
    ]
    assert DOC_TEXT not in orjson.dumps(body).decode()


def test_search_does_not_mix_in_document_text(sent, csrf_client, owner):
    assert csrf_client(owner).get("/api/search/?q=zebracorn").json()["results"] == []


def test_a_share_page_shows_attachment_names_not_contents(sent):
    conversation, _message, _attachment = sent
    link = shares.create_share(conversation)
    page = Client().get(f"/s/{link.token}/").content.decode()
    assert "figures.txt" in page and "zebracorn" not in page


def test_exports_list_the_files(sent, csrf_client, owner):
    conversation, _message, _attachment = sent
    markdown = csrf_client(owner).get(f"/api/conversations/{conversation.pk}/export.md").content.decode()
    assert "Attached: figures.txt" in markdown and "zebracorn" not in markdown
    document = orjson.loads(csrf_client(owner).get(f"/api/conversations/{conversation.pk}/export.json").content)
    user = next(m for m in document["messages"] if m["role"] == "user")
    assert user["attachments"][0]["name"] == "figures.txt"


def post_estimate(client, body):
    return client.post("/api/attachments/estimate/", orjson.dumps(body), content_type="application/json")


def test_the_estimate_counts_the_attachments_at_the_models_price(local_extraction, owner, csrf_client):
    pricing.set_price("kimi-k2.6", per_request="0", per_million_prompt="1000000", per_million_completion="0")
    doc = uploads.create_attachment(owner, name="a.txt", data=b"one two three four " * 100)
    plain = post_estimate(csrf_client(owner), {"model": "kimi-k2.6", "content": "hello"}).json()
    with_doc = post_estimate(csrf_client(owner), {"model": "kimi-k2.6", "content": "hello", "attachments": [doc.pk]})
    body = with_doc.json()
    assert with_doc.status_code == 200 and body["fits"] is True
    assert body["attachment_tokens"] == doc.tokens
    assert body["prompt_tokens"] == plain["prompt_tokens"] + doc.tokens
    # 1 credit per prompt token, nothing per completion token: the cost is the prompt.
    assert Decimal(body["estimated_cost"]) == Decimal(body["prompt_tokens"])
    assert body["attachments"] == [{"id": doc.pk, "name": "a.txt", "kind": "document", "tokens": doc.tokens}]


def test_the_estimate_says_when_documents_do_not_fit(local_extraction, owner, csrf_client):
    doc = uploads.create_attachment(owner, name="long.txt", data=b"word " * 40_000)
    body = post_estimate(
        csrf_client(owner), {"model": "moonshot-v1-8k", "content": "sum up", "attachments": [doc.pk]}
    ).json()
    assert body["fits"] is False and "long.txt" in body["message"] and "8,192" in body["message"]


def test_the_estimate_of_another_users_attachment_is_not_found(local_extraction, owner, outsider, csrf_client):
    theirs = uploads.create_attachment(outsider, name="t.txt", data=b"theirs")
    response = post_estimate(csrf_client(owner), {"model": "kimi-k2.6", "content": "x", "attachments": [theirs.pk]})
    assert response.status_code == 404 and response.json()["error"]["code"] == "not_found"


def test_the_estimate_refuses_bad_input_with_its_reason(local_extraction, owner, csrf_client):
    client = csrf_client(owner)
    response = post_estimate(client, {"content": "x", "attachments": "1,2"})
    assert response.status_code == 400 and response.json()["error"]["field"] == "attachments"
    assert client.post("/api/attachments/estimate/", "{", content_type="application/json").status_code == 400


def import_file(client, data: bytes, name: str = "export.json"):
    import io

    handle = io.BytesIO(data)
    handle.name = name
    return client.post("/api/import/", {"file": handle})


def test_json_and_zip_exports_carry_the_files_and_import_restores_them(sent, csrf_client, owner, outsider):
    conversation, _message, _attachment = sent
    exported = csrf_client(owner).get(f"/api/conversations/{conversation.pk}/export.json").content
    user = next(m for m in orjson.loads(exported)["messages"] if m["role"] == "user")
    import base64

    assert base64.b64decode(user["attachments"][0]["data"]) == DOC_TEXT.encode()
    response = import_file(csrf_client(outsider), exported)
    assert response.status_code == 201, response.content
    copy = Attachment.objects.get(owner=outsider)
    assert (copy.name, copy.text, copy.message.content) == ("figures.txt", DOC_TEXT, "see the file")

    archive = b"".join(csrf_client(owner).get("/api/export/all.zip").streaming_content)
    response = import_file(csrf_client(owner), archive, "all.zip")
    assert response.status_code == 201, response.content
    assert Attachment.objects.filter(owner=owner, message__isnull=False).count() == 2


def test_an_import_whose_file_fails_the_checks_stores_nothing(local_extraction, owner, csrf_client, tmp_path):
    import base64

    document = {
        "format": "kimichat.conversation.v1",
        "conversation": {"title": "t", "model": "kimi-k2.6"},
        "messages": [
            {
                "role": "user",
                "content": "a",
                "attachments": [{"name": "ok.txt", "data": base64.b64encode(b"fine").decode()}],
            },
            {
                "role": "user",
                "content": "b",
                "attachments": [{"name": "bad.bin", "data": base64.b64encode(b"\x00\x01\x02").decode()}],
            },
        ],
    }
    response = import_file(csrf_client(owner), orjson.dumps(document))
    assert response.status_code == 400 and "bad.bin" in response.json()["error"]["message"]
    assert Attachment.objects.count() == 0 and Conversation.objects.count() == 0
    assert not any(p.is_file() for p in (tmp_path / "media").rglob("*"))


def test_an_import_with_malformed_file_data_is_refused(local_extraction, owner, csrf_client):
    document = {
        "format": "kimichat.conversation.v1",
        "conversation": {"title": "t"},
        "messages": [{"role": "user", "content": "a", "attachments": [{"name": "x.txt", "data": "not base64!"}]}],
    }
    response = import_file(csrf_client(owner), orjson.dumps(document))
    assert response.status_code == 400 and "messages[0].attachments[0].data" in response.json()["error"]["message"]
