"""Personalisation through the JSON API and the send path: preferences (custom instructions, theme, chat width),
presets, feedback on answers and its admin, and custom instructions reaching the model."""

from __future__ import annotations

import json

import pytest
from django.contrib.auth.models import Permission
from django.urls import reverse

from conversations.admin.dashboard import feedback_by_model
from conversations.models import Conversation, Feedback, Message, Preset, UserPreferences

pytestmark = pytest.mark.django_db


def patch(client, url, body):
    return client.patch(url, json.dumps(body), content_type="application/json")


def post(client, url, body):
    return client.post(url, json.dumps(body), content_type="application/json")


def put(client, url, body):
    return client.put(url, json.dumps(body), content_type="application/json")


# --- preferences ------------------------------------------------------------------------------------------------


def test_preferences_default_then_saved_per_user(owner_client, owner, outsider):
    assert owner_client.get("/api/me/preferences/").json() == {
        "about": "",
        "answer_style": "",
        "theme": "system",
        "chat_width": "normal",
    }
    response = patch(owner_client, "/api/me/preferences/", {"theme": "dark", "about": "  I teach physics.  "})
    assert response.status_code == 200
    assert response.json()["theme"] == "dark" and response.json()["about"] == "I teach physics."
    assert UserPreferences.objects.get(user=owner).theme == "dark"
    assert not UserPreferences.objects.filter(user=outsider).exists()


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"theme": "purple"}, "theme"),
        ({"chat_width": 3}, "chat_width"),
        ({"about": "x" * 3001}, "about"),
        ({"answer_style": "a\x00b"}, "answer_style"),
        ({"colour": "red"}, "colour"),
    ],
)
def test_bad_preferences_are_refused_naming_the_field(owner_client, owner, body, field):
    response = patch(owner_client, "/api/me/preferences/", body)
    assert response.status_code == 400 and response.json()["error"]["field"] == field
    assert not UserPreferences.objects.filter(user=owner).exists()


def test_the_page_carries_the_theme_and_width_server_side(owner_client, owner):
    patch(owner_client, "/api/me/preferences/", {"theme": "dark", "chat_width": "wide"})
    page = owner_client.get("/").content.decode()
    assert 'data-theme="dark"' in page and 'data-chat-width="wide"' in page


# --- presets ----------------------------------------------------------------------------------------------------


def test_preset_lifecycle(owner_client, owner, outsider, kimi_settings):
    body = {
        "name": "Terse coder",
        "model": "moonshot-v1-8k",
        "system_prompt": "Answer in code only.",
        "settings": {"temperature": 0.2, "max_tokens": 500},
    }
    created = post(owner_client, "/api/presets/", body)
    assert created.status_code == 201, created.content
    preset = created.json()
    assert preset["settings"] == {"temperature": 0.2, "max_tokens": 500} and preset["model"] == "moonshot-v1-8k"
    assert post(owner_client, "/api/presets/", body).json()["error"]["field"] == "name"  # the name is taken
    listed = owner_client.get("/api/presets/").json()["results"]
    assert [p["name"] for p in listed] == ["Terse coder"]
    renamed = patch(owner_client, f"/api/presets/{preset['id']}/", {"name": "Terse"})
    assert renamed.status_code == 200 and renamed.json()["name"] == "Terse"
    assert owner_client.delete(f"/api/presets/{preset['id']}/").status_code == 204
    assert not Preset.objects.exists()


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"model": "kimi-k3"}, "name"),  # no name
        ({"name": " "}, "name"),
        ({"name": "k3", "model": "kimi-k3", "settings": {"temperature": 0.3}}, "model"),  # k3's temperature is fixed
        ({"name": "t", "settings": {"temperature": 7}}, "settings.temperature"),
        ({"name": "t", "settings": {"colour": 1}}, "settings.colour"),
        ({"name": "t", "system_prompt": 5}, "system_prompt"),
        ({"name": "t", "extra": 5}, "extra"),
    ],
)
def test_bad_presets_are_refused(owner_client, body, field, kimi_settings):
    response = post(owner_client, "/api/presets/", body)
    assert response.status_code == 400 and response.json()["error"]["field"] == field, response.content
    assert not Preset.objects.exists()


def test_another_users_preset_is_missing(owner_client, outsider):
    theirs = Preset.objects.create(owner=outsider, name="theirs", system_prompt="secret-9q")
    for method in ("get", "delete"):
        response = getattr(owner_client, method)(f"/api/presets/{theirs.pk}/")
        assert response.status_code == 404 and "secret-9q" not in response.content.decode()
    assert patch(owner_client, f"/api/presets/{theirs.pk}/", {"name": "mine"}).status_code == 404
    assert Preset.objects.get(pk=theirs.pk).name == "theirs"


# --- feedback ---------------------------------------------------------------------------------------------------


@pytest.fixture
def answer(owner):
    conversation = Conversation.objects.create(owner=owner, model="kimi-k2.6", title="t")
    Message.objects.create(conversation=conversation, role="user", content="q")
    return Message.objects.create(conversation=conversation, role="assistant", content="a", model="kimi-k2.6")


def test_feedback_rate_change_and_withdraw(owner_client, answer):
    url = f"/api/messages/{answer.pk}/feedback/"
    assert owner_client.get(url).json() == {"feedback": None}
    response = put(owner_client, url, {"rating": "down", "note": "  It got the year wrong. "})
    assert response.status_code == 200
    assert response.json()["feedback"]["rating"] == "down"
    stored = Feedback.objects.get(message=answer)
    assert (stored.rating, stored.note, stored.model) == (-1, "It got the year wrong.", "kimi-k2.6")
    put(owner_client, url, {"rating": "up"})
    assert Feedback.objects.get(message=answer).rating == 1 and Feedback.objects.count() == 1  # the latest wins
    assert owner_client.delete(url).status_code == 204 and not Feedback.objects.exists()


def test_the_chats_history_carries_each_answers_rating(owner_client, answer):
    other = Message.objects.create(conversation=answer.conversation, role="assistant", content="b", model="m")
    put(owner_client, f"/api/messages/{answer.pk}/feedback/", {"rating": "down", "note": "no"})
    response = owner_client.get(f"/api/conversations/{answer.conversation_id}/?versions=1")
    assert response.status_code == 200
    ratings = {m["id"]: m["feedback"] for m in response.json()["messages"]}
    assert ratings[answer.pk] == "down" and ratings[other.pk] is None and len(ratings) == 3


@pytest.mark.parametrize(
    ("body", "field"),
    [({"rating": "meh"}, "rating"), ({"rating": "up", "note": "x" * 2001}, "note"), ({"rating": "up", "x": 1}, "x")],
)
def test_bad_feedback_is_refused(owner_client, answer, body, field):
    response = put(owner_client, f"/api/messages/{answer.pk}/feedback/", body)
    assert response.status_code == 400 and response.json()["error"]["field"] == field
    assert not Feedback.objects.exists()


def test_only_finished_answers_are_rated(owner_client, answer):
    question = answer.conversation.messages.get(role="user")
    assert put(owner_client, f"/api/messages/{question.pk}/feedback/", {"rating": "up"}).status_code == 400
    answer.status = Message.Status.STREAMING
    answer.save()
    assert put(owner_client, f"/api/messages/{answer.pk}/feedback/", {"rating": "up"}).status_code == 400


def test_another_users_answer_cannot_be_rated(client, outsider, answer):
    client.force_login(outsider)
    response = put(client, f"/api/messages/{answer.pk}/feedback/", {"rating": "down"})
    assert response.status_code == 404 and not Feedback.objects.exists()


def test_feedback_admin_needs_the_message_content_permission(client, make_user, answer):
    Feedback.objects.create(message=answer, rating=-1, note="wrong-year-note", model="kimi-k2.6")
    staff = make_user("staff", is_staff=True)
    client.force_login(staff)
    url = reverse("admin:conversations_feedback_changelist")
    assert client.get(url).status_code == 403
    staff.user_permissions.add(Permission.objects.get(codename="view_feedback"))
    assert client.get(url).status_code == 403  # its own view permission is not enough: it is content
    staff.user_permissions.add(Permission.objects.get(codename="view_message"))
    page = client.get(url, {"model": "kimi-k2.6", "rating__exact": "-1"})
    assert page.status_code == 200 and "wrong-year-note" in page.content.decode()
    assert "wrong-year-note" not in client.get(url, {"rating__exact": "1"}).content.decode()


def test_dashboard_counts_feedback_per_model(owner, make_answer):
    for rating, model in [(1, "a"), (1, "a"), (-1, "a"), (-1, "b")]:
        Feedback.objects.create(message=make_answer(owner, model=model), rating=rating, model=model)
    counts = {c.model: (c.up, c.down, c.up_percent) for c in feedback_by_model()}
    assert counts == {"a": (2, 1, 67), "b": (0, 1, 0)}


# --- custom instructions on the send path -----------------------------------------------------------------------


def test_instructions_follow_the_system_prompt_when_the_chat_has_them_on(owner):
    from conversations.services.personal.preferences import system_prompt_for

    conversation = Conversation.objects.create(owner=owner, model="kimi-k2.6", system_prompt="Be brief.")
    assert system_prompt_for(conversation) == "Be brief."
    UserPreferences.objects.create(user=owner, about="I am a nurse.", answer_style="Use metric units.")
    assert system_prompt_for(conversation) == (
        "Be brief.\n\nAbout the user:\nI am a nurse.\n\nHow to answer:\nUse metric units."
    )
    conversation.custom_instructions = False
    assert system_prompt_for(conversation) == "Be brief."


def test_the_switch_is_a_conversation_field(owner_client, owner):
    conversation = Conversation.objects.create(owner=owner, model="kimi-k2.6")
    response = patch(owner_client, f"/api/conversations/{conversation.pk}/", {"custom_instructions": False})
    assert response.status_code == 200 and response.json()["custom_instructions"] is False
    assert patch(owner_client, f"/api/conversations/{conversation.pk}/", {"custom_instructions": 1}).status_code == 400


def test_a_rename_marks_the_title_as_the_users(owner_client, owner):
    conversation = Conversation.objects.create(owner=owner, model="kimi-k2.6", title="first words")
    response = patch(owner_client, f"/api/conversations/{conversation.pk}/", {"title": "My name"})
    assert response.json()["title_source"] == "user"
