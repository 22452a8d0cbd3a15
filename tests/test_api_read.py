"""The read-only JSON API: owner scoping, pagination, pinned query counts."""

import pytest
from django.utils import timezone

from conversations.models import Conversation, Message

pytestmark = pytest.mark.django_db


def make_conversations(user, count):
    now = timezone.now()
    return Conversation.objects.bulk_create(
        Conversation(owner=user, title=f"c{i}", model="kimi-k2.6", updated_at=now - timezone.timedelta(minutes=i))
        for i in range(count)
    )


def test_me(owner_client, owner):
    body = owner_client.get("/api/me/").json()
    assert body["username"] == "owner" and body["id"] == owner.pk


@pytest.mark.parametrize("url", ["/api/me/", "/api/conversations/", "/api/conversations/1/"])
def test_anonymous_gets_401_json(client, url):
    response = client.get(url)
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "not_authenticated"


def test_list_is_newest_first_and_paginated_by_cursor(owner_client, owner, outsider):
    make_conversations(owner, 75)
    make_conversations(outsider, 5)
    first = owner_client.get("/api/conversations/?limit=30").json()
    assert [c["title"] for c in first["results"]][:3] == ["c0", "c1", "c2"]
    seen = [c["title"] for c in first["results"]]
    cursor = first["next"]
    while cursor:
        page = owner_client.get(f"/api/conversations/?limit=30&cursor={cursor}").json()
        seen += [c["title"] for c in page["results"]]
        cursor = page["next"]
    assert seen == [f"c{i}" for i in range(75)]


def test_list_query_count_is_constant(owner_client, owner, django_assert_num_queries):
    make_conversations(owner, 120)
    # 1) the session, 2) the user, 3) one page of conversations.
    with django_assert_num_queries(3):
        assert len(owner_client.get("/api/conversations/?limit=100").json()["results"]) == 100


def test_list_filters_and_bad_parameters(owner_client, owner):
    Conversation.objects.create(owner=owner, title="archived", model="m", archived=True)
    Conversation.objects.create(owner=owner, title="pinned", model="m", pinned=True)
    Conversation.objects.create(owner=owner, title="plain", model="m")
    assert [c["title"] for c in owner_client.get("/api/conversations/?archived=1").json()["results"]] == ["archived"]
    assert [c["title"] for c in owner_client.get("/api/conversations/?pinned=1").json()["results"]] == ["pinned"]
    for query, field in [
        ("limit=0", "limit"),
        ("limit=abc", "limit"),
        ("cursor=%%%", "cursor"),
        ("pinned=yes", "pinned"),
    ]:
        response = owner_client.get(f"/api/conversations/?{query}")
        assert response.status_code == 400, query
        assert field in response.json()["error"]["message"]


def test_detail_owner_sees_outsider_gets_404(client, owner, outsider):
    conversation = Conversation.objects.create(owner=owner, title="secret", model="kimi-k2.6")
    Message.objects.create(conversation=conversation, role="user", content="hello")
    Message.objects.create(
        conversation=conversation,
        role="assistant",
        content="hi",
        status="complete",
        prompt_tokens=5,
        completion_tokens=2,
        total_tokens=7,
    )
    client.force_login(owner)
    body = client.get(f"/api/conversations/{conversation.pk}/").json()
    assert body["title"] == "secret"
    assert [(m["role"], m["status"]) for m in body["messages"]] == [("user", "complete"), ("assistant", "complete")]
    assert body["messages"][1]["usage"]["total_tokens"] == 7
    client.force_login(outsider)
    response = client.get(f"/api/conversations/{conversation.pk}/")
    assert response.status_code == 404
    assert client.get("/api/conversations/999999/").status_code == 404
    # The same for the page.
    assert client.get(f"/c/{conversation.pk}/").status_code == 404


def test_detail_pages_back_through_long_conversations(owner_client, owner, django_assert_num_queries):
    conversation = Conversation.objects.create(owner=owner, title="long", model="kimi-k2.6")
    Message.objects.bulk_create(
        Message(conversation=conversation, role="user" if i % 2 == 0 else "assistant", content=f"m{i}")
        for i in range(1000)
    )
    # 1) session, 2) user, 3) the conversation, 4) one page of messages, 5) their attachments, 6) their versions.
    with django_assert_num_queries(6):
        body = owner_client.get(f"/api/conversations/{conversation.pk}/").json()
    assert [m["content"] for m in body["messages"]][-1] == "m999"
    assert len(body["messages"]) == 50 and body["has_more"]
    earlier = owner_client.get(f"/api/conversations/{conversation.pk}/?before={body['messages'][0]['id']}&limit=10")
    assert [m["content"] for m in earlier.json()["messages"]] == [f"m{i}" for i in range(940, 950)]


def test_models_carry_names_families_and_prices(owner_client, kimi_settings):
    from conversations.services.billing.pricing import set_price

    set_price("kimi-k2.6", per_request="0.5", per_million_prompt="4", per_million_completion="16")
    body = owner_client.get("/api/models/").json()
    by_id = {m["id"]: m for m in body["models"]}
    k26 = by_id["kimi-k2.6"]
    assert (k26["name"], k26["family"]) == ("Kimi K2.6", "Kimi K2.6")
    assert k26["price"] == {
        "per_request": "0.500000",
        "per_million_prompt": "4.000000",
        "per_million_completion": "16.000000",
        "per_million_cached": "0.000000",
    }
    assert {by_id[m]["family"] for m in ("kimi-k2", "kimi-k2-0905-preview", "kimi-k2-turbo-preview")} == {"Kimi K2"}
    assert by_id["moonshot-v1-8k-vision-preview"]["name"] == "Moonshot v1 8K Vision (preview)"
    assert set(by_id["moonshot-v1-8k"]["price"]) == {
        "per_request", "per_million_prompt", "per_million_completion", "per_million_cached"
    }  # fmt: skip
