"""Sockets under attack: an open socket dies with its session (logout, password change, deactivation: at once, on
every worker, and re-checked on every frame), and only the site's own origin — scheme, host and port — may open
one (cross-site websocket hijacking from a page on another port, in real Chromium)."""

from __future__ import annotations

import asyncio
import http.server
import re
import threading

import httpx
import pytest
import websockets
from asgiref.sync import sync_to_async
from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.hashers import make_password
from django.contrib.sessions.models import Session
from django.db import connection

from conversations.models import Message
from tests.conftest import PASSWORD
from tests.daphne import free_port, start_daphne

CLOSE_NOT_AUTHENTICATED = 4401


async def _closed_with(tab, timeout: float = 5) -> int | None:
    """The close code the server sent, skipping frames that came before it."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        output = await tab.communicator.receive_output(timeout=max(0.05, deadline - loop.time()))
        if output["type"] == "websocket.close":
            return output.get("code")


async def _say(tab) -> None:
    await tab.say("are you still there?")


# --- every frame re-checks the session (no signal needed: a session deleted or a user changed behind our back) ---


def _delete_sessions(user):
    Session.objects.all().delete()  # e.g. `clearsessions`, or a session store wiped


def _deactivate_in_bulk(user):
    get_user_model().objects.filter(pk=user.pk).update(is_active=False)  # update() sends no signal


def _replace_password_hash(user):
    # A raw update, as a restore or another service would do it: only the per-frame check can see it.
    get_user_model().objects.filter(pk=user.pk).update(password=make_password("new one"))


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(
    "revoke",
    [_delete_sessions, _deactivate_in_bulk, _replace_password_hash],
    ids=["session-deleted", "deactivated-in-bulk", "password-hash-replaced"],
)
async def test_a_send_on_a_revoked_session_is_refused_and_closes_4401(connect, owner, revoke):
    tab = await connect(owner)
    await sync_to_async(revoke)(owner)
    await _say(tab)
    assert await _closed_with(tab) == CLOSE_NOT_AUTHENTICATED
    assert not await sync_to_async(Message.objects.exists)()


@pytest.mark.django_db(transaction=True)
async def test_saving_a_new_password_closes_the_users_other_sockets_at_once(connect, owner):
    tab = await connect(owner)

    def change_password():
        owner.set_password("a much better passphrase")
        owner.save()

    await sync_to_async(change_password)()
    assert await _closed_with(tab) == CLOSE_NOT_AUTHENTICATED


# --- through real daphne workers: logout, password change, deactivation over HTTP -------------------------------


def _login_over_http(server, username: str, password: str = PASSWORD) -> httpx.Client:
    client = httpx.Client(base_url=server.url, timeout=20)
    page = client.get("/accounts/login/")
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text).group(1)
    credentials = {"username": username, "password": password, "csrfmiddlewaretoken": token}
    response = client.post("/accounts/login/", data=credentials)
    assert response.status_code == 302, response.text[:500]
    return client


def _post_form(client: httpx.Client, path: str, data: dict) -> httpx.Response:
    page = client.get(path if not path.startswith("/accounts/logout") else "/accounts/password/")
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text).group(1)
    return client.post(path, data={**data, "csrfmiddlewaretoken": token})


async def _socket(server, client: httpx.Client):
    cookie = f"sessionid={client.cookies['sessionid']}"
    return await websockets.connect(
        server.ws_url, additional_headers={"Cookie": cookie, "Origin": server.url}, open_timeout=10
    )


async def _close_code(connection, timeout: float = 5) -> int | None:
    try:
        while True:
            await asyncio.wait_for(connection.recv(), timeout)
    except websockets.ConnectionClosed as exc:
        return exc.rcvd.code if exc.rcvd else None


async def _alive(connection) -> bool:
    await connection.send('{"type": "ping"}')
    return '"pong"' in await asyncio.wait_for(connection.recv(), 5)


@pytest.fixture
def daphne_users(transactional_db, settings, make_user):
    # daphne hashes with its own settings' hashers; the test's users must be readable there.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.PBKDF2PasswordHasher"]
    return make_user("alice"), make_user("root", is_staff=True, is_superuser=True)


@pytest.fixture
def two_workers(daphne_users, offline_kimi, tmp_path):
    """Two workers sharing Redis when it is configured (the socket and the HTTP request on different workers), else
    one worker (its in-memory channel layer) serving both."""
    if settings.REDIS_URL and connection.vendor == "postgresql":
        servers = [start_daphne(offline_kimi, tmp_path, name=n, REDIS_URL=settings.REDIS_URL) for n in ("a", "b")]
    else:
        servers = [start_daphne(offline_kimi, tmp_path, name="a")]
    yield servers[0], servers[-1]
    for server in servers:
        server.stop()


async def test_logout_closes_that_sessions_sockets_with_4401_and_only_those(two_workers):
    web, sockets = two_workers
    this_session = await sync_to_async(_login_over_http)(web, "alice")
    other_session = await sync_to_async(_login_over_http)(web, "alice")
    doomed, survivor = await _socket(sockets, this_session), await _socket(sockets, other_session)
    assert await _alive(doomed) and await _alive(survivor)
    response = await sync_to_async(_post_form)(this_session, "/accounts/logout/", {})
    assert response.status_code == 302
    assert await _close_code(doomed) == CLOSE_NOT_AUTHENTICATED
    assert await _alive(survivor)
    await survivor.close()


async def test_password_change_closes_the_other_sessions_sockets_and_keeps_this_one(two_workers):
    web, sockets = two_workers
    here, elsewhere = [await sync_to_async(_login_over_http)(web, "alice") for _ in range(2)]
    mine, stolen = await _socket(sockets, here), await _socket(sockets, elsewhere)
    new = "a much better passphrase"
    response = await sync_to_async(_post_form)(
        here, "/accounts/password/", {"old_password": PASSWORD, "new_password1": new, "new_password2": new}
    )
    assert response.status_code == 302
    assert await _close_code(stolen) == CLOSE_NOT_AUTHENTICATED
    assert await _alive(mine)  # update_session_auth_hash kept the session that changed it
    await mine.close()


async def test_deactivation_in_the_admin_closes_every_socket_of_the_user(two_workers, daphne_users):
    web, sockets = two_workers
    alice, _root = daphne_users
    tabs = [await _socket(sockets, await sync_to_async(_login_over_http)(web, "alice")) for _ in range(2)]
    staff = await sync_to_async(_login_over_http)(web, "root")
    response = await sync_to_async(_post_form)(
        staff, "/admin/auth/user/", {"action": "deactivate_users", "_selected_action": [alice.pk]}
    )
    assert response.status_code == 302
    assert [await _close_code(tab) for tab in tabs] == [CLOSE_NOT_AUTHENTICATED] * 2


# --- the origin: scheme, host and port ---------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(
    "origin,host,allowed",
    [
        (b"http://127.0.0.1:8000", b"127.0.0.1:8000", True),  # the page the socket's host serves
        (b"http://127.0.0.1:8399", b"127.0.0.1:8000", False),  # another port on the same host: another site's page
        (b"https://127.0.0.1:8000", b"127.0.0.1:8000", False),  # another scheme
        (b"http://127.0.0.1", b"127.0.0.1:8000", False),  # the default port is another port
        (b"http://localhost:8000", b"127.0.0.1:8000", False),  # another allowed host is still another origin
        (b"http://evil.example:8000", b"evil.example:8000", False),  # a host not in ALLOWED_HOSTS
        (b"https://chat.example.com", b"127.0.0.1:8001", True),  # CSRF_TRUSTED_ORIGINS (behind a proxy)
        (b"https://chat.example.com:8443", b"127.0.0.1:8001", False),
    ],
)
async def test_websocket_origin_must_be_the_sites_own(connect, owner, settings, origin, host, allowed):
    settings.CSRF_TRUSTED_ORIGINS = ["https://chat.example.com"]
    settings.ALLOWED_HOSTS = ["127.0.0.1", "localhost"]
    tab, connected, _code = await connect.raw(owner, origin=(b"origin", origin), host=host)
    assert connected is allowed


ATTACKER_PAGE = """<!doctype html><meta charset="utf-8"><title>cute cats</title><script>
window.result = "pending";
const socket = new WebSocket("%(ws_url)s");
socket.onopen = () => socket.send(JSON.stringify({type: "subscribe", conversation_id: %(conversation_id)d}));
socket.onmessage = (event) => { window.result = "read: " + event.data; };
socket.onclose = (event) => { if (window.result === "pending") window.result = "closed " + event.code; };
</script>"""


@pytest.mark.browser
def test_a_page_on_another_port_cannot_use_the_victims_socket(open_page, live_daphne, browser_user, chromium):
    from conversations.models import Conversation

    conversation = Conversation.objects.create(owner=browser_user, model="kimi-k2.6", title="private plans")
    Message.objects.create(conversation=conversation, role="user", content="the secret is 42")
    victim_tab = open_page("/")  # the victim is logged in: the browser holds the session cookie for 127.0.0.1
    page = ATTACKER_PAGE % {"ws_url": live_daphne.ws_url, "conversation_id": conversation.pk}

    class Attacker(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - http.server's name
            body = page.encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", free_port()), Attacker)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        attacker_tab = victim_tab.context.new_page()  # same browser profile: the victim's cookies go along
        attacker_tab.goto(f"http://127.0.0.1:{server.server_address[1]}/")
        attacker_tab.wait_for_function("window.result !== 'pending'", timeout=15000)
        result = attacker_tab.evaluate("window.result")
    finally:
        server.shutdown()
        server.server_close()
    assert "the secret is 42" not in result
    assert result.startswith("closed"), result
