"""The app's own error pages, also under DEBUG (what `make run` uses): a missing chat, another user's chat or a
revoked share link shows the KimiChat 404 page, never Django's yellow debug page with the URL list and settings."""

import pytest
from django.test import Client

from conversations.models import Conversation, Message
from conversations.services.history import shares

pytestmark = pytest.mark.django_db


@pytest.fixture
def debug(settings):
    settings.DEBUG = True


def assert_app_404(response):
    assert response.status_code == 404
    body = response.content.decode()
    assert "Page not found" in body and 'href="/"' in body
    assert "technical" not in body.lower() and "urlpatterns" not in body.lower()
    assert "DEBUG = True" not in body and "<style" not in body


def test_missing_chat_shows_the_app_404_page_under_debug(debug, owner_client):
    assert_app_404(owner_client.get("/c/999999/"))


def test_another_users_chat_shows_the_same_404_page(debug, owner_client, outsider):
    theirs = Conversation.objects.create(owner=outsider, title="theirs")
    response = owner_client.get(f"/c/{theirs.pk}/")
    assert_app_404(response)
    assert "theirs" not in response.content.decode()


def test_revoked_share_link_shows_the_app_404_page_under_debug(debug, owner):
    conversation = Conversation.objects.create(owner=owner, title="shared once")
    Message.objects.create(conversation=conversation, role="user", content="hello")
    link = shares.create_share(conversation)
    assert shares.revoke_share(owner, link.token)
    assert_app_404(Client().get(f"/s/{link.token}/"))


def test_the_404_page_speaks_the_readers_language(debug, owner_client):
    response = owner_client.get("/c/999999/", HTTP_ACCEPT_LANGUAGE="zh-hans")
    assert response.status_code == 404 and 'lang="zh-hans"' in response.content.decode()


def test_api_404_stays_json_under_debug(debug, owner_client):
    response = owner_client.get("/api/conversations/999999/")
    assert response.status_code == 404 and response.json()["error"]["code"] == "not_found"


def test_without_debug_the_same_page(settings, owner_client):
    settings.DEBUG = False
    assert_app_404(owner_client.get("/c/999999/"))
