"""PATCH and DELETE on /api/conversations/<id>/ (GET stays conversations.api.conversation_detail)."""

import pytest
from django.test import Client
from django.utils import timezone

from conversations.models import Conversation, CreditAccount, CreditTransaction, Message

pytestmark = pytest.mark.django_db

CSRF_TOKEN = "k" * 32  # any 32-character secret works as the cookie value and the header


def make_conversation(owner, title="Trip planning", **fields):
    return Conversation.objects.create(owner=owner, title=title, model="kimi-k2.6", **fields)


def url(conversation):
    return f"/api/conversations/{conversation.pk}/"


def patch(client, conversation, body, **extra):
    data = body if isinstance(body, str | bytes) else __import__("json").dumps(body)
    return client.patch(url(conversation), data, content_type="application/json", **extra)


@pytest.fixture
def csrf_client(owner):
    client = Client(enforce_csrf_checks=True)
    client.force_login(owner)
    client.cookies["csrftoken"] = CSRF_TOKEN
    return client


def test_patch_renames_pins_archives_and_changes_settings(owner_client, owner):
    earlier = timezone.now() - timezone.timedelta(days=3)
    conversation = make_conversation(owner, updated_at=earlier, temperature=0.3, json_mode=True)
    response = patch(
        owner_client,
        conversation,
        {
            "title": "  Kyoto in April  ",
            "pinned": True,
            "archived": True,
            "model": "kimi-k2-thinking",
            "system_prompt": "Answer briefly.",
            "settings": {"top_p": 0.9, "max_tokens": 2048, "thinking": None},
        },
    )
    assert response.status_code == 200
    body = response.json()
    assert body["title"] == "Kyoto in April"
    assert body["pinned"] is True and body["archived"] is True
    assert body["model"] == "kimi-k2-thinking" and body["system_prompt"] == "Answer briefly."
    # Settings not named in the body keep their values.
    assert body["settings"] == {
        "temperature": 0.3,
        "top_p": 0.9,
        "max_tokens": 2048,
        "json_mode": True,
        "thinking": None,
        "reasoning_effort": None,
        "web_search": False,
    }
    conversation.refresh_from_db()
    assert (conversation.title, conversation.top_p, conversation.max_tokens) == ("Kyoto in April", 0.9, 2048)
    # Renaming is not activity: the sidebar order must not change.
    assert conversation.updated_at == earlier


def test_patch_can_clear_settings_to_null(owner_client, owner):
    conversation = make_conversation(owner, temperature=0.5, max_tokens=100, thinking=True)
    body = patch(
        owner_client, conversation, {"settings": {"temperature": None, "max_tokens": None, "thinking": False}}
    ).json()
    assert body["settings"]["temperature"] is None and body["settings"]["max_tokens"] is None
    assert body["settings"]["thinking"] is False


def test_empty_patch_changes_nothing(owner_client, owner):
    conversation = make_conversation(owner)
    response = patch(owner_client, conversation, {})
    assert response.status_code == 200 and response.json()["title"] == "Trip planning"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"title": "   "}, "title"),
        ({"title": "x" * 201}, "title"),
        ({"title": 5}, "title"),
        ({"pinned": "yes"}, "pinned"),
        ({"archived": 1}, "archived"),
        ({"model": ""}, "model"),
        ({"model": "m" * 101}, "model"),
        ({"system_prompt": "p" * 20_001}, "system_prompt"),
        ({"system_prompt": None}, "system_prompt"),
        ({"settings": []}, "settings"),
        ({"settings": {"temperature": 1.5}}, "settings.temperature"),
        ({"settings": {"temperature": -0.1}}, "settings.temperature"),
        ({"settings": {"temperature": True}}, "settings.temperature"),
        ({"settings": {"top_p": "0.5"}}, "settings.top_p"),
        ({"settings": {"max_tokens": 0}}, "settings.max_tokens"),
        ({"settings": {"max_tokens": 1_000_001}}, "settings.max_tokens"),
        ({"settings": {"max_tokens": 10.5}}, "settings.max_tokens"),
        ({"settings": {"json_mode": None}}, "settings.json_mode"),
        ({"settings": {"thinking": "auto"}}, "settings.thinking"),
        ({"settings": {"reasoning_effort": "medium"}}, "settings.reasoning_effort"),
        ({"settings": {"reasoning_effort": 2}}, "settings.reasoning_effort"),
        ({"settings": {"seed": 1}}, "settings.seed"),
        ({"owner": 2, "id": 9}, "id"),
    ],
)
def test_patch_rejects_bad_values_and_saves_nothing(owner_client, owner, body, field):
    conversation = make_conversation(owner)
    response = patch(owner_client, conversation, {"title": "New name", **body} if field != "title" else body)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "bad_parameter" and error["field"] == field and error["message"]
    conversation.refresh_from_db()
    assert conversation.title == "Trip planning"


def test_unknown_fields_are_all_named(owner_client, owner):
    conversation = make_conversation(owner)
    message = patch(owner_client, conversation, {"owner": 2, "updated_at": "x"}).json()["error"]["message"]
    assert "owner" in message and "updated_at" in message


@pytest.mark.parametrize("raw", ["{not json", "[1, 2]", '"title"', "NaN", ""])
def test_patch_rejects_bodies_that_are_not_json_objects(owner_client, owner, raw):
    conversation = make_conversation(owner)
    response = patch(owner_client, conversation, raw)
    assert response.status_code == 400
    assert response.json()["error"]["code"] in {"bad_json", "bad_parameter"}


def test_patch_boundaries_are_accepted(owner_client, owner):
    # A model with no known limits of its own (kimi-k2.6 fixes the temperature): only the PATCH's bounds apply.
    conversation = make_conversation(owner)
    Conversation.objects.filter(pk=conversation.pk).update(model="some-custom-model")
    conversation.refresh_from_db()
    body = {
        "title": "t" * 200,
        "system_prompt": "p" * 20_000,
        "settings": {"temperature": 0, "top_p": 1, "max_tokens": 1_000_000},
    }
    assert patch(owner_client, conversation, body).status_code == 200


def test_outsider_gets_404_for_every_method_and_nothing_changes(client, owner, outsider):
    conversation = make_conversation(owner)
    Message.objects.create(conversation=conversation, role="user", content="hi")
    client.force_login(outsider)
    for response in (
        client.get(url(conversation)),
        patch(client, conversation, {"title": "mine now"}),
        client.delete(url(conversation)),
    ):
        assert response.status_code == 404
        assert response.json()["error"]["code"] == "not_found"
    conversation.refresh_from_db()
    assert conversation.title == "Trip planning"


def test_missing_conversation_is_the_same_404(owner_client):
    response = owner_client.get("/api/conversations/999999/")
    assert response.status_code == 404 and response.json()["error"]["code"] == "not_found"


def test_anonymous_gets_401(client, owner):
    conversation = make_conversation(owner)
    for response in (
        client.get(url(conversation)),
        patch(client, conversation, {"title": "x"}),
        client.delete(url(conversation)),
    ):
        assert response.status_code == 401
        assert response.json()["error"]["code"] == "not_authenticated"
    assert Conversation.objects.filter(pk=conversation.pk).exists()


def test_writes_need_the_csrf_token(csrf_client, owner):
    conversation = make_conversation(owner)
    assert patch(csrf_client, conversation, {"title": "no token"}).status_code == 403
    assert csrf_client.delete(url(conversation)).status_code == 403
    conversation.refresh_from_db()
    assert conversation.title == "Trip planning"
    # Reads need none; writes with the header pass.
    assert csrf_client.get(url(conversation)).status_code == 200
    assert patch(csrf_client, conversation, {"title": "with token"}, HTTP_X_CSRFTOKEN=CSRF_TOKEN).status_code == 200
    assert csrf_client.delete(url(conversation), HTTP_X_CSRFTOKEN=CSRF_TOKEN).status_code == 204


def test_delete_removes_messages_and_keeps_the_credit_ledger(owner_client, owner):
    conversation = make_conversation(owner)
    answer = Message.objects.create(conversation=conversation, role="assistant", content="done", status="complete")
    account, _ = CreditAccount.objects.get_or_create(user=owner)  # a signal may have made it already
    charge = CreditTransaction.objects.create(
        account=account, kind="charge", amount=-1, balance_after=9, message=answer
    )
    response = owner_client.delete(url(conversation))
    assert response.status_code == 204 and response.content == b""
    assert not Conversation.objects.filter(pk=conversation.pk).exists()
    assert not Message.objects.filter(pk=answer.pk).exists()
    charge.refresh_from_db()
    assert charge.message_id is None
    assert owner_client.get(url(conversation)).status_code == 404


@pytest.mark.parametrize("status", ["streaming", "pending"])
def test_delete_is_refused_while_an_answer_is_being_written(owner_client, owner, status):
    conversation = make_conversation(owner)
    Message.objects.create(conversation=conversation, role="assistant", content="half", status=status)
    response = owner_client.delete(url(conversation))
    assert response.status_code == 409 and response.json()["error"]["code"] == "busy"
    assert Conversation.objects.filter(pk=conversation.pk).exists()


def test_get_through_the_dispatcher_still_pages_messages(owner_client, owner):
    conversation = make_conversation(owner)
    ids = [Message.objects.create(conversation=conversation, role="user", content=f"m{i}").pk for i in range(5)]
    body = owner_client.get(url(conversation) + "?limit=2").json()
    assert [m["id"] for m in body["messages"]] == ids[-2:] and body["has_more"] is True
    assert owner_client.get(url(conversation) + "?limit=abc").status_code == 400


def test_other_methods_are_405(owner_client, owner):
    conversation = make_conversation(owner)
    response = owner_client.put(url(conversation), "{}", content_type="application/json")
    assert response.status_code == 405 and "PATCH" in response["Allow"]


def test_list_after_changes_query_count(owner_client, owner, django_assert_num_queries):
    now = timezone.now()
    Conversation.objects.bulk_create(
        Conversation(owner=owner, title=f"c{i}", model="m", updated_at=now - timezone.timedelta(minutes=i))
        for i in range(120)
    )
    first = Conversation.objects.for_user(owner).get(title="c5")
    patch(owner_client, first, {"archived": True})
    # 1) the session, 2) the user, 3) one page of conversations.
    with django_assert_num_queries(3):
        results = owner_client.get("/api/conversations/?limit=100").json()["results"]
    assert len(results) == 100 and "c5" not in {c["title"] for c in results}
    assert [c["title"] for c in owner_client.get("/api/conversations/?archived=1").json()["results"]] == ["c5"]


def test_model_switch_that_the_chat_settings_do_not_fit_is_refused_with_the_settings_to_reset(owner_client, owner):
    conversation = make_conversation(owner, temperature=0.3, max_tokens=100)
    conversation.model = "moonshot-v1-8k"
    conversation.save(update_fields=["model"])
    response = patch(owner_client, conversation, {"model": "kimi-k2.6"})
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "settings_not_supported" and error["field"] == "model"
    assert "temperature" in error["message"] and error["settings"] == ["temperature"]  # max_tokens=100 fits
    conversation.refresh_from_db()
    assert conversation.model == "moonshot-v1-8k"  # nothing half-stored
    # Resetting what the model does not take, in the same PATCH, lets the switch through.
    response = patch(owner_client, conversation, {"model": "kimi-k2.6", "settings": {"temperature": None}})
    assert response.status_code == 200
    conversation.refresh_from_db()
    assert (conversation.model, conversation.temperature, conversation.max_tokens) == ("kimi-k2.6", None, 100)


def test_settings_the_chat_model_refuses_are_refused_when_saved(owner_client, owner):
    conversation = make_conversation(owner)  # kimi-k2.6: thinking on, temperature fixed at 1
    response = patch(owner_client, conversation, {"settings": {"temperature": 0.2}})
    assert response.status_code == 400
    error = response.json()["error"]
    assert (error["code"], error["field"], error["settings"]) == (
        "settings_not_supported",
        "settings.temperature",
        ["temperature"],
    )
