"""Share links: create, list, revoke through the API; the public read-only page at /s/<token>/."""

import pytest
from django.test import Client

from conversations.models import Conversation, Message, SharedLink

pytestmark = pytest.mark.django_db

CSRF_TOKEN = "s" * 32


def make_conversation(owner, title="Bread baking", **fields):
    return Conversation.objects.create(owner=owner, title=title, model="kimi-k2.6", **fields)


def say(conversation, role, content, **fields):
    """A message following the newest one of the active branch (``parent=`` to place it elsewhere in the tree)."""
    fields.setdefault("parent", conversation.messages.current().order_by("-id").first())
    return Message.objects.create(conversation=conversation, role=role, content=content, **fields)


@pytest.fixture
def chat(owner):
    conversation = make_conversation(owner)
    say(conversation, "user", "How long should dough rise? <b>asap</b>")
    say(conversation, "assistant", "About **two hours**.\n\n<script>alert('x')</script>\n\n[more](javascript:alert(1))")
    return conversation


def share(client, conversation, **extra):
    return client.post(f"/api/conversations/{conversation.pk}/share/", **extra)


def test_share_list_and_public_page(owner_client, chat):
    response = share(owner_client, chat)
    assert response.status_code == 201
    body = response.json()
    token = body["token"]
    assert body["url"] == f"/s/{token}/" and body["created_at"] and len(token) >= 32
    link = SharedLink.objects.get(token=token)
    assert link.up_to_message_id == chat.messages.order_by("-id").first().pk
    listed = owner_client.get(f"/api/conversations/{chat.pk}/shares/").json()["results"]
    assert [s["token"] for s in listed] == [token]

    page = Client().get(body["url"])  # anonymous reader
    assert page.status_code == 200
    assert page["X-Robots-Tag"] == "noindex, nofollow"
    text = page.content.decode()
    assert "Bread baking" in text
    assert "How long should dough rise? &lt;b&gt;asap&lt;/b&gt;" in text
    assert "<strong>two hours</strong>" in text
    assert "<script>alert" not in text
    assert 'href="javascript' not in text and "[more](javascript:alert(1))" in text  # shown as text, not a link
    assert "&lt;script&gt;alert(" in text  # the raw HTML is shown as text


def test_later_messages_and_later_versions_are_not_shared(owner_client, chat):
    token = share(owner_client, chat).json()["token"]
    old_answer = chat.messages.get(role="assistant")
    # After sharing: the answer is regenerated and the conversation goes on.
    new_answer = say(chat, "assistant", "Regenerated: ninety minutes.", parent=old_answer.parent)
    old_answer.superseded_by = new_answer
    old_answer.save(update_fields=["superseded_by"])
    say(chat, "user", "A private follow-up")
    text = Client().get(f"/s/{token}/").content.decode()
    assert "two hours" in text
    assert "ninety minutes" not in text and "private follow-up" not in text


def test_unfinished_answers_are_not_shown(owner_client, owner):
    conversation = make_conversation(owner)
    say(conversation, "user", "question")
    say(conversation, "assistant", "half an answ", status="streaming")
    token = share(owner_client, conversation).json()["token"]
    text = Client().get(f"/s/{token}/").content.decode()
    assert "question" in text and "half an answ" not in text


def test_revoke(owner_client, chat):
    token = share(owner_client, chat).json()["token"]
    other = share(owner_client, chat).json()["token"]
    assert owner_client.delete(f"/api/shares/{token}/").status_code == 204
    assert Client().get(f"/s/{token}/").status_code == 404
    assert Client().get(f"/s/{other}/").status_code == 200
    assert [s["token"] for s in owner_client.get(f"/api/conversations/{chat.pk}/shares/").json()["results"]] == [other]
    # Revoking twice, or an unknown token: 404.
    assert owner_client.delete(f"/api/shares/{token}/").json()["error"]["code"] == "not_found"
    assert owner_client.delete("/api/shares/nope/").status_code == 404


def test_outsider_cannot_share_list_or_revoke(owner_client, outsider, chat):
    token = share(owner_client, chat).json()["token"]
    client = Client()
    client.force_login(outsider)
    for response in (
        share(client, chat),
        client.get(f"/api/conversations/{chat.pk}/shares/"),
        client.delete(f"/api/shares/{token}/"),
    ):
        assert response.status_code == 404 and response.json()["error"]["code"] == "not_found"
    assert SharedLink.objects.get(token=token).revoked_at is None
    assert SharedLink.objects.count() == 1


def test_anonymous_gets_401_from_the_api(owner_client, chat):
    token = share(owner_client, chat).json()["token"]
    client = Client()
    for response in (
        share(client, chat),
        client.get(f"/api/conversations/{chat.pk}/shares/"),
        client.delete(f"/api/shares/{token}/"),
    ):
        assert response.status_code == 401


def test_unknown_tokens_and_deleted_conversations_are_404(owner_client, chat):
    assert Client().get("/s/not-a-token/").status_code == 404
    token = share(owner_client, chat).json()["token"]
    owner_client.delete(f"/api/conversations/{chat.pk}/")
    assert Client().get(f"/s/{token}/").status_code == 404


def test_deactivated_owner_takes_their_shares_down(owner_client, owner, chat):
    token = share(owner_client, chat).json()["token"]
    owner.is_active = False
    owner.save(update_fields=["is_active"])
    assert Client().get(f"/s/{token}/").status_code == 404


def test_empty_conversation_cannot_be_shared(owner_client, owner):
    response = share(owner_client, make_conversation(owner))
    assert response.status_code == 409 and response.json()["error"]["code"] == "empty_conversation"


def test_other_pages_still_need_a_login(client):
    response = client.get("/")
    assert response.status_code == 302 and "/accounts/login/" in response["Location"]


def test_share_and_revoke_need_the_csrf_token(owner, chat):
    client = Client(enforce_csrf_checks=True)
    client.force_login(owner)
    client.cookies["csrftoken"] = CSRF_TOKEN
    assert share(client, chat).status_code == 403
    assert not SharedLink.objects.exists()
    token = share(client, chat, HTTP_X_CSRFTOKEN=CSRF_TOKEN).json()["token"]
    assert client.delete(f"/api/shares/{token}/").status_code == 403
    assert client.delete(f"/api/shares/{token}/", HTTP_X_CSRFTOKEN=CSRF_TOKEN).status_code == 204


def test_wrong_methods(owner_client, chat):
    assert owner_client.get(f"/api/conversations/{chat.pk}/share/").status_code == 405
    assert owner_client.post(f"/s/{share(owner_client, chat).json()['token']}/").status_code in {403, 405}
