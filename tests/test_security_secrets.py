"""The upstream API key never reaches a browser or a log: no page, frame, API answer, stored row or log line has it.

Driven with a distinctive key through successful answers, every kind of upstream failure, a key the provider
rejects, and then every page an operator or a user can open; each body, frame and captured log record is searched.
"""

from __future__ import annotations

import json
import logging

import pytest
from asgiref.sync import sync_to_async
from django.test import Client

from conversations.models import Conversation, Message, ProviderSnapshot
from conversations.offline.server import OfflineKimiServer

pytestmark = [pytest.mark.django_db(transaction=True)]

KEY = "sk-kimichat-LEAKCHECK-Q7Zr93xWm1vT"
FRAGMENTS = [KEY, KEY[3:], KEY[-12:]]  # a redactor that keeps the tail, or drops only the prefix, still leaks

FAULTY_SENDS = [
    "fine [[tokens:20]]",
    "[[fault:status:400]]",
    "[[fault:status:401]]",
    "[[fault:status:500]]",
    "[[fault:quota]]",
    "[[fault:error_midstream]] [[tokens:20]]",
    "[[fault:drop_midstream]] [[tokens:20]]",
    "[[fault:garbage]]",
    "[[fault:no_done]] [[tokens:5]]",
]


@pytest.fixture
def keyed_kimi(settings, chat_settings):
    handle = OfflineKimiServer("127.0.0.1", 0, api_key=KEY, tokens_per_second=0).run_in_thread()
    settings.KIMI_BASE_URL = handle.base_url
    settings.KIMI_API_KEY = KEY
    yield handle
    handle.stop()


def assert_no_key(where: str, text: str) -> None:
    for fragment in FRAGMENTS:
        assert fragment not in text, f"the API key is in {where}"


async def test_the_key_is_in_no_frame_row_or_log_line(connect, owner, keyed_kimi, settings, caplog):
    caplog.set_level(logging.DEBUG)
    for name in ("httpx", "httpcore", "conversations", "django"):
        caplog.set_level(logging.DEBUG, logger=name)
    tab = await connect(owner)
    frames = []
    for content in FAULTY_SENDS:
        await tab.say(content, model="kimi-k2-turbo-preview")
        _done, seen = await tab.answer()
        frames += seen
    # A key the provider rejects: its 401 must not be echoed either.
    settings.KIMI_API_KEY = KEY[::-1]  # wrong, so the server answers 401; it is still a secret of ours
    await tab.say("rejected key")
    _done, seen = await tab.answer()
    frames += seen
    assert seen[-1]["error"]["code"] == "upstream_auth_failed"
    settings.KIMI_API_KEY = KEY
    assert keyed_kimi.log.chat_count >= len(FAULTY_SENDS)  # the key really was used upstream

    for fragment in [*FRAGMENTS, KEY[::-1], KEY[::-1][-12:]]:
        assert fragment not in json.dumps(frames)
    rows = await sync_to_async(
        lambda: json.dumps([list(Message.objects.values()), list(ProviderSnapshot.objects.values())], default=str)
    )()
    assert_no_key("the database", rows)
    logged = "\n".join(f"{r.getMessage()} {r.exc_text or ''} {r.__dict__}" for r in caplog.records)
    assert "upstream" in logged or "failed" in logged  # the failures were logged, just not the key
    assert_no_key("the logs", logged)


def test_the_key_is_on_no_page(owner, make_user, settings, keyed_kimi):
    conversation = Conversation.objects.create(owner=owner, model="kimi-k2.6", title="pages")
    Message.objects.create(conversation=conversation, role="user", content="hello")
    answer = Message.objects.create(
        conversation=conversation, role="assistant", content="hi", status="error", error_code="upstream_auth_failed",
        error_message="The Kimi API key was refused.",
    )  # fmt: skip
    staff = make_user("operator", is_staff=True, is_superuser=True)
    user, operator, anonymous = Client(), Client(), Client()
    user.force_login(owner)
    operator.force_login(staff)
    token = user.post(f"/api/conversations/{conversation.pk}/share/").json()["token"]
    pages = [
        (anonymous, "/accounts/login/"),
        (anonymous, "/healthz"),
        (anonymous, "/readyz"),
        (anonymous, f"/s/{token}/"),
        (anonymous, "/api/me/"),
        (user, "/"),
        (user, f"/c/{conversation.pk}/"),
        (user, "/usage/"),
        (user, "/api/me/"),
        (user, "/api/models/"),
        (user, "/api/usage/"),
        (user, "/api/conversations/"),
        (user, f"/api/conversations/{conversation.pk}/"),
        (user, f"/api/conversations/{conversation.pk}/export.md"),
        (user, f"/api/conversations/{conversation.pk}/export.json"),
        (user, "/api/no-such-thing/"),
        (user, "/jsi18n/"),
        (operator, "/admin/"),
        (operator, "/admin/dashboard/"),
        (operator, "/admin/conversations/message/"),
        (operator, f"/admin/conversations/message/{answer.pk}/change/"),
        (operator, "/admin/conversations/providersnapshot/"),
        (operator, "/admin/conversations/credittransaction/"),
        (operator, "/admin/auth/user/"),
    ]
    for client, url in pages:
        response = client.get(url)
        assert response.status_code < 500, url
        body = b"".join(response.streaming_content) if response.streaming else response.content
        headers = "\n".join(f"{k}: {v}" for k, v in response.items())
        assert_no_key(url, body.decode(errors="replace") + headers)
