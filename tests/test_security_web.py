"""Web security: CSRF on every write, JSON errors under /api/, websocket origins, cookie flags, log-in throttling."""

from __future__ import annotations

import time

import pytest
from django.test import Client, override_settings

from conversations.models import Conversation, Message
from conversations.services.history import shares
from tests.conftest import PASSWORD
from tests.test_access_matrix import ROUTES

pytestmark = pytest.mark.django_db

CSRF_TOKEN = "c" * 32


@pytest.fixture(autouse=True)
def _fast_hashing(settings):
    """Argon2 takes ~0.3 s a password: the throttle tests log in dozens of times, and time their windows."""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture
def conversation(owner):
    conversation = Conversation.objects.create(owner=owner, model="kimi-k2.6", title="csrf target")
    Message.objects.create(conversation=conversation, role="user", content="hello")
    Message.objects.create(conversation=conversation, role="assistant", content="hi")
    return conversation


def _api_writes(conversation) -> list[tuple[str, str]]:
    """Every write route of the API, from the access matrix (so a new write route is covered here too)."""
    link = shares.create_share(conversation)
    writes = []
    for route, cases in ROUTES.items():
        for case in cases:
            if route.startswith("api/") and case.method != "GET":
                url = "/" + route.replace("<int:conversation_id>", str(conversation.pk)).replace(
                    "<str:token>", link.token
                ).replace("<int:attachment_id>", "1").replace("<int:project_id>", "1").replace(
                    "<int:preset_id>", "1"
                ).replace("<int:message_id>", "1")  # the CSRF check runs before the view looks it up
                writes.append((case.method, url))
    return writes


def test_every_api_write_needs_the_csrf_token_and_says_so_in_json(owner, conversation):
    client = Client(enforce_csrf_checks=True)
    client.force_login(owner)
    client.cookies["csrftoken"] = CSRF_TOKEN
    writes = _api_writes(conversation)
    assert {m for m, _ in writes} == {"POST", "PATCH", "PUT", "DELETE"}
    before = (list(Conversation.objects.values()), list(Message.objects.values()))
    for method, url in writes:
        for headers in ({}, {"HTTP_X_CSRFTOKEN": "d" * 32}):  # no token, and a token that is not the cookie's
            response = getattr(client, method.lower())(url, b"{}", content_type="application/json", **headers)
            assert response.status_code == 403, (method, url)
            assert response["Content-Type"] == "application/json", (method, url)
            assert response.json()["error"]["code"] == "csrf_failed"
    assert (list(Conversation.objects.values()), list(Message.objects.values())) == before
    # The same request with the token goes through: the 403 above was the CSRF check, not something else.
    response = client.patch(
        f"/api/conversations/{conversation.pk}/", b'{"pinned": true}', content_type="application/json",
        HTTP_X_CSRFTOKEN=CSRF_TOKEN,
    )  # fmt: skip
    assert response.status_code == 200


FORMS = [
    ("/accounts/login/", {"username": "owner", "password": PASSWORD}, False),
    ("/accounts/signup/", {"username": "newbie", "password1": "x" * 20, "password2": "x" * 20}, False),
    ("/accounts/logout/", {}, True),
    ("/accounts/password/", {"old_password": PASSWORD, "new_password1": "y" * 20, "new_password2": "y" * 20}, True),
    ("/i18n/setlang/", {"language": "zh-hans"}, False),
    ("/admin/login/", {"username": "owner", "password": PASSWORD}, False),
]


@pytest.mark.parametrize("url,data,logged_in", FORMS, ids=[f[0] for f in FORMS])
def test_every_form_needs_the_csrf_token(owner, url, data, logged_in):
    client = Client(enforce_csrf_checks=True)
    if logged_in:
        client.force_login(owner)
    response = client.post(url, data)
    assert response.status_code == 403
    assert "text/html" in response["Content-Type"]  # pages keep Django's CSRF page
    assert not Client().login(username="newbie", password="x" * 20)
    assert Client().login(username="owner", password=PASSWORD)  # the password was not changed
    # And with the token, the form is accepted (so the 403 above was the CSRF check).
    client.cookies["csrftoken"] = CSRF_TOKEN
    assert client.post(url, {**data, "csrfmiddlewaretoken": CSRF_TOKEN}).status_code in (200, 302)


def test_admin_forms_need_the_csrf_token(make_user):
    staff = make_user("operator", is_staff=True, is_superuser=True)
    target = Conversation.objects.create(owner=staff, model="kimi-k2.6", title="keep me")
    client = Client(enforce_csrf_checks=True)
    client.force_login(staff)
    response = client.post(f"/admin/conversations/conversation/{target.pk}/delete/", {"post": "yes"})
    assert response.status_code == 403
    assert Conversation.objects.filter(pk=target.pk).exists()


def test_unknown_api_address_and_server_errors_are_json(owner_client, monkeypatch):
    response = owner_client.get("/api/no-such-thing/")
    assert response.status_code == 404 and response.json()["error"]["code"] == "not_found"
    assert Client().get("/no-such-page/").status_code in (302, 404)  # pages: a login redirect or Django's page
    assert "text/html" in owner_client.get("/no-such-page/")["Content-Type"]

    def boom(user):
        raise RuntimeError("secret internals")

    owner_client.raise_request_exception = False
    monkeypatch.setattr("conversations.api.usage.usage_summary", boom)
    response = owner_client.get("/api/usage/")
    assert response.status_code == 500
    assert response.json()["error"]["code"] == "server_error"
    assert "secret internals" not in response.content.decode()


def test_wrong_methods_on_the_api_are_json_405(owner_client, conversation):
    for method, url in [
        ("post", "/api/me/"),
        ("put", f"/api/conversations/{conversation.pk}/"),
        ("get", "/api/import/"),
    ]:
        response = getattr(owner_client, method)(url)
        assert response.status_code == 405, url
        assert response.json()["error"]["code"] == "method_not_allowed"
        assert response["Allow"]


# --- websocket origin -------------------------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(
    "origin",
    [None, b"http://127.0.0.1.evil.example", b"http://evil.example", b"null", b"http://localhost.evil:8000"],
    ids=["missing", "lookalike-suffix", "foreign", "null", "lookalike-port"],
)
async def test_websocket_origin_is_checked(connect, owner, origin):
    tab, connected, _code = await connect.raw(owner, origin=(b"origin", origin) if origin else None)
    assert not connected


# --- cookies ----------------------------------------------------------------------------------------------------


def test_session_cookie_is_httponly_and_lax_and_secure_in_production(owner):
    client = Client()
    client.get("/accounts/login/")
    response = client.post("/accounts/login/", {"username": "owner", "password": PASSWORD})
    assert response.status_code == 302
    cookie = response.cookies["sessionid"]
    assert cookie["httponly"] and cookie["samesite"] == "Lax" and not cookie["secure"]  # DEBUG: plain http works
    with override_settings(SESSION_COOKIE_SECURE=True, CSRF_COOKIE_SECURE=True):  # what DEBUG=false sets
        response = Client().post("/accounts/login/", {"username": "owner", "password": PASSWORD})
        assert response.cookies["sessionid"]["secure"] and response.cookies["sessionid"]["httponly"]


# --- log-in throttling --------------------------------------------------------------------------------------------


def _login(username: str, password: str, ip: str = "203.0.113.7"):
    return Client(REMOTE_ADDR=ip).post("/accounts/login/", {"username": username, "password": password})


def test_five_failures_lock_the_account_even_for_the_right_password(owner, settings):
    # The defaults: an account from one address, an address, an account from anywhere (tests/test_security_auth.py).
    assert (
        settings.LOGIN_FAILURES_PER_ACCOUNT_AND_ADDRESS,
        settings.LOGIN_FAILURES_PER_IP,
        settings.LOGIN_FAILURES_PER_ACCOUNT,
    ) == (5, 20, 100)
    for n in range(5):
        response = _login("owner", f"wrong {n}")
        assert response.status_code == 200  # the ordinary "wrong password" form
    response = _login("OWNER", PASSWORD)  # case variant, the right password
    assert response.status_code == 429
    assert int(response["Retry-After"]) > 14 * 60
    assert "Too many failed log-in attempts. Try again in 15 minutes." in response.content.decode()
    assert "_auth_user_id" not in response.client.session
    # Another account from the first address is not locked by this one's failures.
    other = _login("outsider-does-not-exist", "nope")
    assert other.status_code == 200


def test_twenty_failures_from_one_address_lock_it_for_every_account(owner, settings):
    for n in range(20):
        assert _login(f"guess-{n}", "nope", ip="192.0.2.9").status_code == 200
    assert _login("owner", PASSWORD, ip="192.0.2.9").status_code == 429
    assert _login("owner", PASSWORD, ip="192.0.2.10").status_code == 302  # another address logs in


def test_success_clears_the_account_counter_and_the_window_ends(owner, settings):
    settings.LOGIN_THROTTLE_SECONDS = 2
    for _ in range(4):
        _login("owner", "wrong")
    assert _login("owner", PASSWORD).status_code == 302
    started = time.monotonic()
    for _ in range(4):  # four more: the success cleared the first four
        assert _login("owner", "wrong").status_code == 200
    assert _login("owner", "wrong").status_code == 200  # the fifth failure
    response = _login("owner", PASSWORD)
    assert response.status_code == 429 and 1 <= int(response["Retry-After"]) <= 2
    assert "Try again in 1 minute." in response.content.decode()
    time.sleep(max(0.0, started + 2.2 - time.monotonic()))
    assert _login("owner", PASSWORD).status_code == 302


def test_blank_forms_are_not_counted(owner):
    for _ in range(10):
        assert _login("", "").status_code == 200
    assert _login("owner", PASSWORD).status_code == 302
