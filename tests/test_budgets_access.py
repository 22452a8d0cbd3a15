"""Budgets and model allow-lists where users meet them: the chat's websocket, /api/models/, conversation settings,
the user's own caps (API and usage page), KimiChat's /v1/ API (official SDKs on a real daphne worker), the admin."""

from __future__ import annotations

import asyncio
import datetime
import uuid
from decimal import Decimal as D

import anthropic
import openai
import pytest
from asgiref.sync import sync_to_async
from django.contrib.auth.models import Group
from django.db import connection
from django.test import Client
from django.urls import reverse

from conversations.models import Conversation, CreditTransaction, GroupPolicy, Message, UserBudget
from conversations.services.apikeys import keys
from conversations.services.billing import budgets, credits, pricing
from tests.daphne import start_daphne

pytestmark = pytest.mark.django_db(transaction=True)
ALLOWED = "kimi-k2.6"  # the default model
OTHER = "kimi-k2-turbo-preview"


def group_of(*users, name="team", **policy):
    group = Group.objects.create(name=name)
    group.user_set.add(*users)
    GroupPolicy.objects.create(group=group, **policy)
    return group


def one_credit_answers():
    for model in (ALLOWED, OTHER):
        pricing.set_price(model, per_request=D(1))


# --- the chat's websocket -------------------------------------------------------------------------------------


async def test_a_send_over_the_daily_cap_is_refused_with_its_code_cap_and_reset_time(connect, owner):
    await sync_to_async(one_credit_answers)()
    await sync_to_async(UserBudget.objects.create)(user=owner, daily_cap=D(1))
    tab = await connect(owner)
    await tab.say("first [[tokens:3]]")
    done, _ = await tab.answer()
    assert done["status"] == "complete"
    await tab.say("second [[tokens:3]]")
    refusal, _ = await tab.until_type("error")
    assert refusal["code"] == budgets.DAILY
    assert (D(refusal["cap"]), D(refusal["spent"]), D(refusal["estimated_cost"])) == (D(1), D(1), D(1))
    assert refusal["set_by"] == "staff"
    resets_at = datetime.datetime.fromisoformat(refusal["resets_at"])
    assert resets_at == (await sync_to_async(budgets.periods)()).day_end
    assert "daily spending cap" in refusal["message"]
    # Nothing of the refused send was stored or charged.
    assert await sync_to_async(Message.objects.count)() == 2
    assert await sync_to_async(CreditTransaction.objects.filter(kind="charge").count)() == 1


async def test_a_send_over_the_groups_shared_budget_names_the_group(connect, owner, make_user):
    def setup():
        one_credit_answers()
        mate = make_user("mate")
        group_of(owner, mate, monthly_budget=D(1))
        credits.reserve(mate, model=ALLOWED, prompt_tokens=1, max_completion_tokens=1)  # mate used it up

    await sync_to_async(setup)()
    tab = await connect(owner)
    await tab.say("hello [[tokens:3]]")
    refusal, _ = await tab.until_type("error")
    assert (refusal["code"], refusal["group"], D(refusal["spent"])) == (budgets.GROUP, "team", D(1))
    assert datetime.datetime.fromisoformat(refusal["resets_at"]).day == 1  # in the settings' zone (UTC here)


async def test_a_model_outside_the_users_groups_lists_is_refused_and_an_allowed_one_answers(connect, owner):
    await sync_to_async(group_of)(owner, allowed_models=[ALLOWED])
    tab = await connect(owner)
    await tab.say("hello", model=OTHER)
    refusal, _ = await tab.until_type("error")
    assert refusal["code"] == "model_not_allowed" and OTHER in refusal["message"]
    assert await sync_to_async(Conversation.objects.count)() == 0
    await tab.say("hello [[tokens:3]]", model=ALLOWED)
    done, _ = await tab.answer()
    assert done["status"] == "complete"


async def test_a_conversation_on_a_model_no_longer_allowed_cannot_regenerate(connect, owner):
    def setup():
        return Conversation.objects.create(owner=owner, model=OTHER)

    conversation = await sync_to_async(setup)()
    tab = await connect(owner)
    await tab.say("hi [[tokens:3]]", conversation_id=conversation.pk)
    await tab.answer()
    await sync_to_async(group_of)(owner, allowed_models=[ALLOWED])
    await tab.send(type="regenerate", conversation_id=conversation.pk, client_msg_id=str(uuid.uuid4()))
    refusal, _ = await tab.until_type("error")
    assert refusal["code"] == "model_not_allowed"


# --- the model picker and conversation settings -----------------------------------------------------------------


def test_the_model_list_shows_only_the_union_of_the_users_groups_lists(owner_client, owner, kimi_settings):
    everything = [m["id"] for m in owner_client.get("/api/models/").json()["models"]]
    assert ALLOWED in everything and OTHER in everything
    group_of(owner, name="plain")  # a group with no list restricts nothing
    group_of(owner, name="turbo", allowed_models=[OTHER])
    body = owner_client.get("/api/models/").json()
    assert [m["id"] for m in body["models"]] == [OTHER]
    assert body["default"] == OTHER  # the default model is not allowed: the first allowed one
    group_of(owner, name="k26", allowed_models=[ALLOWED, "not-offered-upstream"])
    body = owner_client.get("/api/models/").json()
    assert [m["id"] for m in body["models"]] == [m for m in everything if m in (ALLOWED, OTHER)]
    assert body["default"] == ALLOWED


def test_a_conversations_model_cannot_be_changed_to_one_not_allowed(owner_client, owner, kimi_settings):
    conversation = Conversation.objects.create(owner=owner, model=ALLOWED)
    group_of(owner, allowed_models=[ALLOWED])
    url = f"/api/conversations/{conversation.pk}/"
    response = owner_client.patch(url, {"model": OTHER}, content_type="application/json")
    assert response.status_code == 400
    assert response.json()["error"]["field"] == "model"
    assert "not available to your account" in response.json()["error"]["message"]
    conversation.refresh_from_db()
    assert conversation.model == ALLOWED
    assert owner_client.patch(url, {"title": "renamed"}, content_type="application/json").status_code == 200


# --- the user's own caps ---------------------------------------------------------------------------------------


def test_the_budget_api_shows_the_caps_and_lets_the_user_lower_but_never_raise_them(owner_client, owner):
    UserBudget.objects.create(user=owner, daily_cap=D(10))
    body = owner_client.get("/api/me/budget/").json()
    assert body["staff"] == {"daily": "10.000000", "monthly": None}
    assert [limit["code"] for limit in body["limits"]] == [budgets.DAILY]
    ok = owner_client.patch("/api/me/budget/", {"daily": "4.5", "monthly": "100"}, content_type="application/json")
    assert ok.status_code == 200
    assert ok.json()["own"] == {"daily": "4.500000", "monthly": "100.000000"}
    assert {(lim["code"], lim["cap"], lim["set_by"]) for lim in ok.json()["limits"]} == {
        (budgets.DAILY, "4.500000", "user"),
        (budgets.MONTHLY, "100.000000", "user"),
    }
    too_high = owner_client.patch("/api/me/budget/", {"daily": "10.5"}, content_type="application/json")
    assert too_high.status_code == 400 and too_high.json()["error"]["field"] == "daily"
    for bad in ({"daily": -1}, {"daily": 1.5}, {"daily": "1e400"}, {"daily": True}, {"weekly": "1"}, []):
        response = owner_client.patch("/api/me/budget/", bad, content_type="application/json")
        assert response.status_code == 400, bad
    assert owner_client.patch("/api/me/budget/", "{", content_type="application/json").status_code == 400
    removed = owner_client.patch("/api/me/budget/", {"daily": None}, content_type="application/json").json()
    assert removed["own"] == {"daily": None, "monthly": "100.000000"}  # monthly kept: it was left out
    assert UserBudget.objects.get(user=owner).daily_cap == D(10)  # staff's cap untouched
    assert Client().get("/api/me/budget/").status_code == 401  # logged out
    assert Client().patch("/api/me/budget/", {"daily": "1"}, content_type="application/json").status_code == 401


def test_the_usage_page_shows_the_limits_and_saves_the_users_own_caps(owner_client, owner):
    UserBudget.objects.create(user=owner, monthly_cap=D(50))
    page = owner_client.get("/usage/")
    assert b"Spending limits" in page.content and b"budget-monthly_budget_exceeded" in page.content
    refused = owner_client.post(reverse("usage-budget"), {"daily": "", "monthly": "60"})
    assert refused.status_code == 400 and b"cannot exceed the 50 credits" in refused.content
    saved = owner_client.post(reverse("usage-budget"), {"daily": "2", "monthly": "20"})
    assert saved.status_code == 302 and saved["Location"] == "/usage/#budget"
    budget = UserBudget.objects.get(user=owner)
    assert (budget.own_daily_cap, budget.own_monthly_cap, budget.monthly_cap) == (D(2), D(20), D(50))
    assert owner_client.get(reverse("usage-budget")).status_code == 405


# --- KimiChat's /v1/ API ---------------------------------------------------------------------------------------


@pytest.fixture
def server(offline_kimi, tmp_path):
    worker = start_daphne(offline_kimi, tmp_path, name="api", KIMI_MAX_RETRIES="0")
    yield worker
    worker.stop()


def test_the_v1_api_lists_and_answers_only_allowed_models_and_refuses_over_a_cap(server, owner):
    secret = keys.create(owner, name="script").secret
    client = openai.OpenAI(api_key=secret, base_url=server.url + "/v1", max_retries=0)
    claude = anthropic.Anthropic(api_key=secret, base_url=server.url, max_retries=0)
    group_of(owner, allowed_models=[OTHER])
    assert [m.id for m in client.models.list().data] == [OTHER]
    assert [m.id for m in claude.models.list().data] == [OTHER]
    with pytest.raises(openai.PermissionDeniedError) as refused:
        client.chat.completions.create(model=ALLOWED, messages=[{"role": "user", "content": "hi"}])
    assert refused.value.body["code"] == "model_not_allowed" and refused.value.body["param"] == "model"
    with pytest.raises(anthropic.PermissionDeniedError):
        claude.messages.create(model=ALLOWED, max_tokens=50, messages=[{"role": "user", "content": "hi"}])
    assert not CreditTransaction.objects.filter(kind="charge").exists()

    one_credit_answers()
    UserBudget.objects.create(user=owner, monthly_cap=D(1))
    answer = client.chat.completions.create(model=OTHER, messages=[{"role": "user", "content": "hi"}])
    assert answer.choices[0].message.content
    with pytest.raises(openai.PermissionDeniedError) as capped:
        client.chat.completions.create(model=OTHER, messages=[{"role": "user", "content": "again"}])
    body = capped.value.body
    assert (body["type"], body["code"]) == ("insufficient_quota", budgets.MONTHLY)
    reset = budgets.periods().month_end.strftime("%Y-%m-%d %H:%M")
    assert reset in body["message"]
    with pytest.raises(anthropic.PermissionDeniedError) as capped_claude:
        claude.messages.create(model=OTHER, max_tokens=50, messages=[{"role": "user", "content": "again"}])
    assert "monthly spending cap" in str(capped_claude.value)


# --- the admin ---------------------------------------------------------------------------------------------------


def test_staff_set_a_users_caps_on_the_user_page(admin_client, owner):
    UserBudget.objects.create(user=owner, own_daily_cap=D(3))
    page = admin_client.get(reverse("admin:auth_user_change", args=[owner.pk]))
    assert b"spending caps" in page.content.lower() and b"set by" in page.content.lower()
    budget = UserBudget.objects.get(user=owner)
    data = {
        "username": "owner",
        "is_active": "on",
        "date_joined_0": "2025-01-01",
        "date_joined_1": "10:00:00",
        "credit_account-TOTAL_FORMS": "1",
        "credit_account-INITIAL_FORMS": "1",
        "credit_account-MIN_NUM_FORMS": "0",
        "credit_account-MAX_NUM_FORMS": "0",
        "credit_account-0-id": str(owner.credit_account.pk),
        "credit_account-0-user": str(owner.pk),
        "budget-TOTAL_FORMS": "1",
        "budget-INITIAL_FORMS": "1",
        "budget-MIN_NUM_FORMS": "0",
        "budget-MAX_NUM_FORMS": "1",
        "budget-0-id": str(budget.pk),
        "budget-0-user": str(owner.pk),
        "budget-0-daily_cap": "5",
        "budget-0-monthly_cap": "",
        "budget-0-own_daily_cap": "999",  # read-only: the user's own, ignored
    }
    response = admin_client.post(reverse("admin:auth_user_change", args=[owner.pk]), data)
    assert response.status_code == 302
    budget.refresh_from_db()
    assert (budget.daily_cap, budget.monthly_cap, budget.own_daily_cap) == (D(5), None, D(3))
    data["budget-0-daily_cap"] = "-1"
    refused = admin_client.post(reverse("admin:auth_user_change", args=[owner.pk]), data)
    assert refused.status_code == 200 and b"greater than or equal to 0" in refused.content


def test_staff_edit_a_groups_budget_and_model_list_on_the_group_page(admin_client, owner, kimi_settings):
    from asgiref.sync import async_to_sync

    from conversations.kimi.configured import get_client

    async_to_sync(get_client().list_models)()  # the admin offers the provider's list as last read
    group = Group.objects.create(name="team")
    group.user_set.add(owner)
    url = reverse("admin:auth_group_change", args=[group.pk])
    page = admin_client.get(url)
    assert page.status_code == 200 and f'value="{ALLOWED}"'.encode() in page.content
    data = {
        "name": "team",
        "policy-TOTAL_FORMS": "1",
        "policy-INITIAL_FORMS": "0",
        "policy-MIN_NUM_FORMS": "0",
        "policy-MAX_NUM_FORMS": "1",
        "policy-0-group": str(group.pk),
        "policy-0-monthly_budget": "250",
        "policy-0-member_monthly_cap": "40",
        "policy-0-allowed_models": [ALLOWED, OTHER],
    }
    assert admin_client.post(url, data).status_code == 302
    policy = GroupPolicy.objects.get(group=group)
    assert (policy.monthly_budget, policy.member_monthly_cap) == (D(250), D(40))
    assert sorted(policy.allowed_models) == sorted([ALLOWED, OTHER])
    listing = admin_client.get(reverse("admin:auth_group_changelist"))
    assert b"250.00" in listing.content and ALLOWED.encode() in listing.content
    data.update({"policy-INITIAL_FORMS": "1", "policy-0-id": str(policy.pk), "policy-0-allowed_models": ["forged"]})
    refused = admin_client.post(url, data)
    assert refused.status_code == 200 and b"not one of the available choices" in refused.content
    page = admin_client.get(url)
    assert b"spent this month" in page.content.lower() and b"credits by its members" in page.content


@pytest.mark.skipif(connection.vendor != "postgresql", reason="row-lock concurrency is what PostgreSQL must prove")
async def test_fifty_simultaneous_sends_never_exceed_a_daily_cap(connect, owner, settings, chat_settings):
    settings.KIMICHAT_MAX_CONCURRENT_ANSWERS = 100
    settings.KIMICHAT_RATE_LIMIT_TIERS = [{"above": 0, "per_minute": 1000, "per_hour": 1000, "per_day": 1000}]
    await sync_to_async(one_credit_answers)()
    await sync_to_async(UserBudget.objects.create)(user=owner, daily_cap=D(7))
    tabs = [await connect(owner) for _ in range(50)]
    await asyncio.gather(*(tab.say(f"send {n} [[tokens:5]]") for n, tab in enumerate(tabs)))

    results = await asyncio.gather(*(tab.outcome() for tab in tabs))
    assert results.count("complete") == 7, results
    assert results.count(budgets.DAILY) == 43, results
    assert await sync_to_async(credits.get_balance)(owner) == D(93)
    assert await sync_to_async(credits.verify_ledger)(owner) == []
    assert await sync_to_async(Conversation.objects.count)() == 7  # refused sends left nothing behind
