"""Who may reach what: every route of the project, every websocket frame that names an id.

The route list is read from the URL resolver, so a new route without an entry in ROUTES (or a new frame type without
one in FRAMES) fails ``test_every_route_has_an_entry``. For each route that takes an id the owner succeeds, another
user gets exactly what a missing id gets (404), and an anonymous visitor is sent to log in (pages) or gets 401 (API).
"""

from __future__ import annotations

import json
import typing
import uuid
from dataclasses import dataclass

import pytest
from asgiref.sync import sync_to_async
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver

from conversations.models import Attachment, Conversation, Feedback, Message, Preset, Project, SharedLink
from conversations.services.chat import frames
from conversations.services.history import shares

pytestmark = pytest.mark.django_db

CSRF_TOKEN = "t" * 32  # any 32 letters from the token alphabet make a valid csrftoken cookie
SECRET = "owner-only-7f3c"
# Admin pages send anonymous visitors to a login page: the admin's own, or (LoginRequiredMiddleware first) ours.
LOGIN_PAGES = ("/admin/login/", "/accounts/login/")  # in the owner's title and messages: must never reach anyone else


@dataclass(frozen=True)
class Case:
    method: str
    owner: int  # the owner's status
    anonymous: str  # "login" (302 to the login page), "401" (API), "public" (served to anyone), "admin" (staff login)
    outsider: str = "404"  # "404", or "own" (served, but only the outsider's own data), or "public"/"admin"
    body: dict | None = None
    query: str = ""


PAGE = Case("GET", 200, "login", "own")
API_OWN = Case("GET", 200, "401", "own")
PUBLIC = Case("GET", 200, "public", "public")

# route → the requests made against it. Ids are filled from the owner's conversation and share link.
ROUTES: dict[str, list[Case]] = {
    "healthz": [PUBLIC],
    "readyz": [PUBLIC],
    "favicon.ico": [Case("GET", 302, "public", "public")],  # a redirect to the static SVG
    "admin/dashboard/": [Case("GET", 302, "admin", "admin")],  # the owner is not staff either (see test_admin_*)
    "accounts/login/": [Case("GET", 302, "public", "public")],  # a logged-in visitor is sent on to the chat
    "accounts/logout/": [Case("POST", 302, "public", "public")],
    "accounts/signup/": [Case("GET", 302, "public", "public")],
    "accounts/password/": [PAGE],
    "accounts/password/done/": [PAGE],
    # Password reset: the same pages for anyone (a logged-in user may reset too); an unknown link says it does not work.
    "accounts/password/reset/": [PUBLIC, Case("POST", 302, "public", "public", body={"email": "x@example.com"})],
    "accounts/password/reset/sent/": [PUBLIC],
    "accounts/reset/<uidb64>/<token>/": [PUBLIC],
    "accounts/reset/done/": [PUBLIC],
    "i18n/setlang/": [Case("POST", 302, "public", "public", body={"language": "en"})],
    "jsi18n/": [PUBLIC],
    "manifest.webmanifest": [PUBLIC],  # browsers fetch a web app manifest without cookies
    "api/me/": [API_OWN],
    "api/me/budget/": [API_OWN, Case("PATCH", 200, "401", "own", body={"daily": "5"})],  # only their own caps
    "api/usage/": [API_OWN],
    "api/models/": [API_OWN],
    "api/conversations/": [API_OWN],
    "api/conversations/<int:conversation_id>/": [
        Case("GET", 200, "401"),
        Case("PATCH", 200, "401", body={"pinned": True}),
        Case("DELETE", 204, "401"),
    ],
    "api/conversations/<int:conversation_id>/export.md": [Case("GET", 200, "401")],
    "api/conversations/<int:conversation_id>/export.json": [Case("GET", 200, "401")],
    "api/conversations/<int:conversation_id>/share/": [Case("POST", 201, "401")],
    # The owner's form body is refused (415: it takes JSON naming a message); switching itself, and
    # another user's message id in the owner's conversation, are in test_branches.py.
    "api/conversations/<int:conversation_id>/branch/": [Case("POST", 415, "401")],
    "api/conversations/<int:conversation_id>/shares/": [Case("GET", 200, "401")],
    "api/shares/<str:token>/": [Case("DELETE", 204, "401")],
    "api/search/": [Case("GET", 200, "401", "own", query=f"?q={SECRET}")],
    "api/export/all.zip": [API_OWN],
    "api/import/": [Case("POST", 400, "401", "own")],  # no file: 400 bad_parameter, and nothing about anyone
    "api/attachments/": [API_OWN, Case("POST", 400, "401", "own")],  # no file: 400 bad_parameter
    "api/attachments/estimate/": [Case("POST", 400, "401", "own")],  # a form body, not JSON: 400 bad_json
    "api/attachments/<int:attachment_id>/": [Case("GET", 200, "401"), Case("DELETE", 204, "401")],
    "api/attachments/<int:attachment_id>/file": [Case("GET", 200, "401")],
    "api/projects/": [API_OWN, Case("POST", 400, "401", "own")],  # a form body, not JSON: 400 bad_json
    "api/projects/reorder/": [Case("POST", 400, "401", "own")],  # likewise
    "api/projects/<int:project_id>/": [
        Case("GET", 200, "401"),
        Case("PATCH", 200, "401", body={"name": "Renamed"}),
        Case("DELETE", 200, "401"),
    ],
    "api/projects/<int:project_id>/files/": [Case("POST", 400, "401")],  # no file: 400 bad_parameter
    "api/projects/<int:project_id>/files/<int:attachment_id>/": [Case("DELETE", 204, "401")],
    # Personalisation (docs/api.md): the user's own preferences and presets, feedback on an answer, a new title.
    "api/me/preferences/": [API_OWN, Case("PATCH", 200, "401", "own", body={"theme": "dark"})],
    "api/presets/": [API_OWN, Case("POST", 400, "401", "own")],  # a form body, not JSON: 400 bad_json
    "api/presets/<int:preset_id>/": [
        Case("GET", 200, "401"),
        Case("PATCH", 200, "401", body={"name": "renamed"}),
        Case("DELETE", 204, "401"),
    ],
    "api/messages/<int:message_id>/feedback/": [
        Case("PUT", 200, "401", body={"rating": "down", "note": "wrong"}),
        Case("GET", 200, "401"),
        Case("DELETE", 204, "401"),
    ],
    "api/conversations/<int:conversation_id>/title/": [Case("POST", 200, "401")],  # asks the offline server
    "": [PAGE],
    "c/<int:conversation_id>/": [Case("GET", 200, "login")],
    "s/<str:token>/": [PUBLIC],
    "usage/": [PAGE],
    "invites/": [PAGE, Case("POST", 302, "login", "own", body={"revoke": "1"})],  # nobody's code 1: nothing revoked
    "usage/budget/": [Case("POST", 302, "login", "own", body={"daily": "5", "monthly": ""})],
    "keys/": [PAGE, Case("POST", 302, "login", "own", body={"revoke": "1"})],  # nobody's key 1: nothing revoked
    # Announcements belong to nobody: a dismissal is the caller's own (tests/test_announcements.py). None is current
    # here, so the id is a 404 for everyone logged in.
    "announcements/<int:announcement_id>/dismiss/": [Case("POST", 404, "login", "own")],
    # KimiChat's own API: a key only; a session, even the owner's, is not a key.
    "v1/models": [Case("GET", 401, "key", "key")],
    "v1/user/credits": [Case("GET", 401, "key", "key")],
    "v1/chat/completions": [Case("POST", 401, "key", "key")],
    "v1/messages": [Case("POST", 401, "key", "key")],
}


def _walk(patterns, prefix=""):
    for pattern in patterns:
        if isinstance(pattern, URLResolver):
            yield from _walk(pattern.url_patterns, prefix + str(pattern.pattern))
        elif isinstance(pattern, URLPattern):
            yield prefix + str(pattern.pattern)


def project_routes() -> set[str]:
    """Every route except Django admin's own (covered by test_admin_routes_need_staff)."""
    return {route for route in _walk(get_resolver().url_patterns) if not route.startswith("admin/")} | {
        "admin/dashboard/"
    }


def test_every_route_has_an_entry():
    assert project_routes() == set(ROUTES), "add the new route to ROUTES with who may reach it"


@pytest.fixture
def world(owner, outsider, attachment_storage, kimi_settings):
    from conversations.services.attachments import storage

    data = f"file text {SECRET}".encode()
    key, _ = storage.save_blob(storage.blob_key(owner.pk, "0" * 64), data)
    Attachment.objects.create(
        owner=owner, kind="document", name=f"{SECRET}.txt", content_type="text/plain", size=len(data),
        sha256="0" * 64, storage_key=key, text=data.decode(), tokens=8,
    )  # fmt: skip
    project = Project.objects.create(owner=owner, name=f"Project {SECRET}", instructions=f"be {SECRET}")
    Attachment.objects.create(
        owner=owner, project=project, kind="document", name=f"{SECRET}-project.txt", content_type="text/plain",
        size=len(data), sha256="0" * 64, storage_key=key, text=data.decode(), tokens=8,
    )  # fmt: skip
    conversation = Conversation.objects.create(owner=owner, model="kimi-k2.6", title=f"Plans {SECRET}", project=project)
    Message.objects.create(conversation=conversation, role="user", content=f"my secret is {SECRET}")
    Message.objects.create(conversation=conversation, role="assistant", content=f"noted: {SECRET}")
    Preset.objects.create(owner=owner, name=f"preset {SECRET}", system_prompt=SECRET)
    theirs = Conversation.objects.create(owner=outsider, model="kimi-k2.6", title="outsider's own")
    Message.objects.create(conversation=theirs, role="user", content="hello from the outsider")
    link = shares.create_share(conversation)
    return conversation, link


def _state() -> tuple[list, ...]:
    return (
        list(Conversation.objects.order_by("pk").values()),
        list(Message.objects.order_by("pk").values()),
        list(SharedLink.objects.order_by("pk").values()),
        list(Attachment.objects.order_by("pk").values()),
        list(Project.objects.order_by("pk").values()),
        list(Preset.objects.order_by("pk").values()),
        list(Feedback.objects.order_by("pk").values()),
    )


def _url(route: str, conversation: Conversation, link: SharedLink) -> str:
    # A project's route names the project's file; the attachments' routes an attachment of a message-to-be.
    attachment = Attachment.objects.filter(
        owner_id=conversation.owner_id, project__isnull=not route.startswith("api/projects/")
    ).first()
    return "/" + route.replace("<int:conversation_id>", str(conversation.pk)).replace(
        "<str:token>", link.token
    ).replace("<int:attachment_id>", str(attachment.pk)).replace("<int:announcement_id>", "1").replace(
        "<int:project_id>", str(conversation.project_id)
    ).replace(
        "<int:preset_id>", str(Preset.objects.filter(owner_id=conversation.owner_id).values_list("pk", flat=True)[0])
    ).replace("<int:message_id>", str(conversation.messages.filter(role="assistant").values_list("pk", flat=True)[0]))


def _request(client: Client, case: Case, url: str, csrf: str | None):
    url += case.query
    headers = {"HTTP_X_CSRFTOKEN": csrf} if csrf else {}
    if case.method == "GET":
        return client.get(url, **headers)
    if case.method in ("PATCH", "PUT", "DELETE"):
        body = json.dumps(case.body or {})
        return getattr(client, case.method.lower())(url, body, content_type="application/json", **headers)
    return client.post(url, case.body or {}, **headers)


def _client(user=None) -> tuple[Client, str]:
    # With the CSRF check on, as in production: the token is the cookie's value sent back in X-CSRFToken.
    client = Client(enforce_csrf_checks=True)
    if user is not None:
        client.force_login(user)
    client.cookies["csrftoken"] = CSRF_TOKEN
    return client, CSRF_TOKEN


def _assert_for(who: str, expected: str, response, url: str, case: Case) -> None:
    label = f"{who} {case.method} {url}"
    raw = b"".join(response.streaming_content) if response.streaming else response.content
    body = raw.decode(errors="replace")
    if expected == "404":
        assert response.status_code == 404, label
        assert SECRET not in body, label
        if url.startswith("/api/"):
            assert response.json()["error"]["code"] == "not_found", label
    elif expected == "401":
        assert response.status_code == 401, label
        assert response.json()["error"]["code"] == "not_authenticated", label
    elif expected == "key":
        assert response.status_code == 401, label
        assert "invalid_api_key" in body or response.json()["error"]["type"] == "authentication_error", label
    elif expected == "login":
        assert response.status_code == 302 and response["Location"].startswith("/accounts/login/"), label
    elif expected == "admin":
        assert response.status_code == 302 and response["Location"].startswith(LOGIN_PAGES), label
    elif expected == "own":
        assert response.status_code < 500, label
        assert SECRET not in body, label  # served, but nothing of the owner's
    elif expected == "public":
        assert response.status_code < 400, label
    else:  # pragma: no cover - a typo in ROUTES
        raise AssertionError(expected)


@pytest.mark.parametrize("route", sorted(ROUTES), ids=lambda r: r or "/")
def test_owner_outsider_and_anonymous(route, world, owner, outsider):
    conversation, link = world
    for case in ROUTES[route]:
        url = _url(route, conversation, link)
        before = _state()
        # Outsider and anonymous first: the owner's DELETE would leave nothing to probe afterwards.
        anonymous, csrf = _client()
        _assert_for("anonymous", case.anonymous, _request(anonymous, case, url, csrf), url, case)
        stranger, csrf = _client(outsider)
        _assert_for("outsider", case.outsider, _request(stranger, case, url, csrf), url, case)
        assert _state() == before  # nothing changed for them
        mine, csrf = _client(owner)
        response = _request(mine, case, url, csrf)
        assert response.status_code == case.owner, (case, response.content[:300])


def test_admin_routes_need_staff(world, owner):
    """Every page of Django's admin, with real ids filled in, sends a non-staff user and an anonymous one to the
    admin login; none of them ever shows a row."""
    conversation, _link = world
    message = conversation.messages.first()
    fill = {"<path:object_id>": str(message.pk), "<id>": str(owner.pk), "<path:content_type_id>": "1"}
    routes = [r for r in _walk(get_resolver().url_patterns) if r.startswith("admin/")]
    checked = 0
    for route in routes:
        if "(?P" in route or route in {"admin/login/", "admin/logout/"}:
            continue  # the catch-all and app-index regexes; login/logout are the way in and out
        url = "/" + route
        for placeholder, value in fill.items():
            url = url.replace(placeholder, value)
        for user in (None, owner):
            client = Client()
            if user is not None:
                client.force_login(user)
            response = client.get(url)
            assert response.status_code == 302 and response["Location"].startswith(LOGIN_PAGES), url
            assert SECRET not in response.content.decode(errors="replace")
            checked += 1
    assert checked > 40  # the walk found the admin's routes


def test_share_link_shows_only_what_was_shared_and_can_be_revoked(world, owner, outsider):
    conversation, link = world
    later = Message.objects.create(conversation=conversation, role="user", content="added after sharing zq9")
    Message.objects.create(conversation=conversation, role="system", content="system prompt xk7")
    public = Client()
    page = public.get(f"/s/{link.token}/").content.decode()
    assert SECRET in page  # what was shared
    assert "zq9" not in page and "xk7" not in page  # later messages and system messages were not
    assert later.pk > link.up_to_message_id
    # Another user cannot revoke it; the owner can, and then nobody sees it.
    stranger, csrf = _client(outsider)
    assert stranger.delete(f"/api/shares/{link.token}/", HTTP_X_CSRFTOKEN=csrf).status_code == 404
    assert public.get(f"/s/{link.token}/").status_code == 200
    mine, csrf = _client(owner)
    assert mine.delete(f"/api/shares/{link.token}/", HTTP_X_CSRFTOKEN=csrf).status_code == 204
    gone = public.get(f"/s/{link.token}/")
    assert gone.status_code == 404 and SECRET not in gone.content.decode()
    assert mine.get(f"/s/{link.token}/").status_code == 404  # the owner too: revoked means gone


# --- websocket frames -------------------------------------------------------------------------------------------

# Frame class → the frame an outsider sends naming the owner's ids, and what the owner's own copy of it does.
FRAMES = {
    frames.Send: lambda c, m: {"type": "send", "conversation_id": c, "content": "hi [[tokens:2]]"},
    frames.Stop: lambda c, m: {"type": "stop", "conversation_id": c},
    frames.Subscribe: lambda c, m: {"type": "subscribe", "conversation_id": c},
    frames.Unsubscribe: lambda c, m: {"type": "unsubscribe", "conversation_id": c},
    frames.Regenerate: lambda c, m: {"type": "regenerate", "conversation_id": c},
    frames.Edit: lambda c, m: {"type": "edit", "conversation_id": c, "message_id": m, "content": "edited"},
    frames.Continue: lambda c, m: {"type": "continue", "conversation_id": c, "message_id": m},
    frames.Ping: None,  # names no id
}
NEEDS_CLIENT_MSG_ID = {frames.Send, frames.Regenerate, frames.Edit, frames.Continue}


def test_every_frame_type_has_an_entry():
    assert set(typing.get_args(frames.Frame)) == set(FRAMES)


@pytest.mark.django_db(transaction=True)
async def test_frames_naming_another_users_ids_get_not_found_and_change_nothing(connect, owner, outsider):
    conversation = await sync_to_async(Conversation.objects.create)(owner=owner, model="kimi-k2.6", title=SECRET)
    user_message = await sync_to_async(Message.objects.create)(
        conversation=conversation, role="user", content=f"mine {SECRET}"
    )
    answer = await sync_to_async(Message.objects.create)(
        conversation=conversation, role="assistant", content=f"yours {SECRET}"
    )
    before = await sync_to_async(lambda: list(Message.objects.order_by("id").values()))()
    stranger = await connect(outsider)
    for kind, build in FRAMES.items():
        if build is None:
            continue
        frame = build(conversation.pk, user_message.pk)
        if kind in NEEDS_CLIENT_MSG_ID:
            frame["client_msg_id"] = str(uuid.uuid4())
        await stranger.send(**frame)
        if kind is frames.Unsubscribe:
            # Unsubscribing from a conversation one does not follow is a silent no-op: nothing to tell.
            assert await stranger.nothing(0.3)
            continue
        error = await stranger.recv()
        assert (error["type"], error["code"]) == ("error", "not_found"), frame
        assert SECRET not in json.dumps(error)
    assert await sync_to_async(lambda: list(Message.objects.order_by("id").values()))() == before
    # Nor does a frame meant for the owner's other tabs reach the outsider's socket.
    mine = await connect(owner)
    await mine.send(type="regenerate", conversation_id=conversation.pk, client_msg_id=str(uuid.uuid4()))
    done, _ = await mine.answer()
    assert done["status"] == "complete"
    assert await stranger.nothing(0.3)
    assert answer.pk != done["message_id"]


@pytest.mark.django_db(transaction=True)
async def test_reusing_another_users_client_msg_id_is_refused_cleanly(connect, owner, outsider):
    mine = await connect(owner)
    client_msg_id = await mine.say("mine [[tokens:2]]")
    await mine.answer()
    stranger = await connect(outsider)
    await stranger.say("theirs", client_msg_id=client_msg_id)
    error = await stranger.recv()
    assert await sync_to_async(Message.objects.count)() == 2  # nothing stored for the outsider
    assert (error["type"], error["code"], error["retryable"]) == ("error", "bad_frame", False), error
    assert "already in use" in error["message"]
