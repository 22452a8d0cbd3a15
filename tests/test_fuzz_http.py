"""Random and malformed requests to the JSON API and the forms: every API answer is JSON, either a success or an
`error` with a code from docs/api.md; nothing answers 500; a refused request changes nothing."""

from __future__ import annotations

import json
import re
from pathlib import Path
from urllib.parse import urlencode

import pytest
from django.test import Client
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conversations.models import Conversation, Message, SharedLink
from conversations.services.billing import credits
from conversations.services.history import shares
from tests.conftest import PASSWORD

pytestmark = pytest.mark.django_db

API_DOC = (Path(__file__).resolve().parents[1] / "docs" / "api.md").read_text()
ERROR_TABLE = API_DOC.split("| code | status | meaning |", 1)[1].split("\n\n", 1)[0]
DOCUMENTED = {code: int(status) for codes, status in re.findall(r"^\| (`.+?) \| (\d{3}) \|", ERROR_TABLE, re.M)
              for code in re.findall(r"`([a-z_]+)`", codes)}  # fmt: skip
CSRF_TOKEN = "f" * 32
SETTINGS = settings(
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large],
)

ROUTES = [
    "/api/me/",
    "/api/usage/",
    "/api/models/",
    "/api/conversations/",
    "/api/conversations/{id}/",
    "/api/conversations/{id}/export.md",
    "/api/conversations/{id}/export.json",
    "/api/conversations/{id}/share/",
    "/api/conversations/{id}/shares/",
    "/api/shares/{token}/",
    "/api/search/",
    "/api/export/all.zip",
    "/api/import/",
    "/api/projects/",
    "/api/projects/reorder/",
    "/api/projects/{id}/",
    "/api/{junk}/",
]
IDS: dict[str, object] = {}


def _deep(depth: int) -> str:
    return '{"title": ' * depth + '"x"' + "}" * depth


JSON_BODIES = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=30)),
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(
            st.sampled_from(["title", "pinned", "archived", "model", "system_prompt", "settings", "temperature",
                             "top_p", "max_tokens", "json_mode", "thinking", "x"]),
            children, max_size=5,
        ),
    ),
    max_leaves=15,
).map(lambda v: json.dumps(v).encode())  # fmt: skip
BODIES = st.one_of(
    JSON_BODIES,
    st.binary(max_size=200),
    st.sampled_from([b"", b"{", b"null", b"\xff\xfe", b'{"title": "\\ud800"}', b"NaN", b"1e99999"]),
    st.sampled_from([b'{"title": "a\\u0000b"}', b'{"system_prompt": "\\u0000"}', b'{"model": "k\\u0000"}']),
    st.builds(lambda d: _deep(d).encode(), st.sampled_from([100, 5_000, 200_000])),
    st.builds(lambda n: b'{"title": "' + b"x" * n + b'"}', st.sampled_from([70_000, 6_000_000])),
)
CONTENT_TYPES = st.sampled_from(
    ["application/json", "text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=zz",
     "application/json; charset=latin-1", "", "image/png"]
)  # fmt: skip
ID_VALUES = st.one_of(
    st.sampled_from(["own", "theirs"]).map(lambda k: IDS[k]),
    st.sampled_from(["0", "-1", "9223372036854775807", "9223372036854775808", "99999999999999999999999", "abc",
                     "1e3", "%00", "..%2F"]),
    st.integers(min_value=0, max_value=10**6).map(str),
)  # fmt: skip
QUERIES = st.dictionaries(
    st.sampled_from(["limit", "cursor", "archived", "pinned", "before", "versions", "q"]),
    st.one_of(st.text(max_size=30), st.sampled_from(["-1", "0", "101", "1e9", "true", "2", "9" * 40, "\x00"])),
    max_size=3,
)


@pytest.fixture
def world(owner, outsider):
    own = Conversation.objects.create(owner=owner, model="kimi-k2.6", title="mine")
    Message.objects.create(conversation=own, role="user", content="hello")
    Message.objects.create(conversation=own, role="assistant", content="hi")
    theirs = Conversation.objects.create(owner=outsider, model="kimi-k2.6", title="theirs")
    Message.objects.create(conversation=theirs, role="user", content="private")
    IDS.update(
        own=str(own.pk), theirs=str(theirs.pk),
        own_token=shares.create_share(own).token, their_token=shares.create_share(theirs).token,
    )  # fmt: skip
    return owner


def _state():
    return (
        list(Conversation.objects.order_by("pk").values()),
        list(Message.objects.order_by("pk").values()),
        list(SharedLink.objects.order_by("pk").values()),
    )


@settings(SETTINGS, max_examples=500)
@given(
    route=st.sampled_from(ROUTES),
    method=st.sampled_from(["GET", "POST", "PATCH", "DELETE", "PUT", "HEAD", "OPTIONS"]),
    conversation_id=ID_VALUES,
    token=st.one_of(st.sampled_from(["own_token", "their_token"]).map(lambda k: IDS[k]), st.text(max_size=40)),
    body=BODIES,
    content_type=CONTENT_TYPES,
    csrf=st.sampled_from(["right", "wrong", "none"]),
    query=QUERIES,
    logged_in=st.booleans(),
)
def test_random_api_requests(world, route, method, conversation_id, token, body, content_type, csrf, query, logged_in):
    client = Client(enforce_csrf_checks=True)
    if logged_in:
        client.force_login(world)
    client.cookies["csrftoken"] = CSRF_TOKEN
    headers = {"right": {"HTTP_X_CSRFTOKEN": CSRF_TOKEN}, "wrong": {"HTTP_X_CSRFTOKEN": "g" * 32}, "none": {}}[csrf]
    safe_token = re.sub(r"[/?#%]", "", token) or "x"
    url = route.format(id=conversation_id, token=safe_token, junk=safe_token)
    before = _state()
    response = client.generic(
        method, url, body, content_type=content_type, QUERY_STRING=urlencode(query),
        **headers,
    )  # fmt: skip
    label = f"{method} {url} {content_type} {body[:80]!r} -> {response.status_code}"
    assert response.status_code < 500, label
    if method == "HEAD":
        return
    if response.status_code >= 400:
        assert response["Content-Type"].startswith("application/json"), label
        error = response.json()["error"]
        assert DOCUMENTED.get(error["code"]) == response.status_code, (label, error)
        assert isinstance(error["message"], str) and error["message"]
        assert _state() == before, label  # a refusal changes nothing
        if not logged_in:  # refused before any view: unreadable, not logged in, no CSRF token, no such route
            assert response.status_code in (400, 401, 403, 404, 405, 413), label
    elif response.status_code in (200, 201):
        assert logged_in, label
        if not response.streaming and response["Content-Type"].startswith("application/json"):
            response.json()  # well-formed
    # Never anything of the outsider's, whatever was asked.
    raw = b"".join(response.streaming_content) if response.streaming else response.content
    assert b"private" not in raw and b'"theirs"' not in raw, label
    assert credits.verify_ledger() == []


FORMS = ["/accounts/login/", "/accounts/signup/", "/accounts/password/", "/i18n/setlang/", "/accounts/logout/"]
FORM_FIELDS = st.dictionaries(
    st.sampled_from(["username", "password", "password1", "password2", "email", "old_password", "new_password1",
                     "new_password2", "language", "next", "csrfmiddlewaretoken"]),
    st.one_of(st.text(max_size=40), st.sampled_from(["owner", PASSWORD, "x" * 200_000, "\x00", "https://evil.example/",
                                                     "//evil.example", "javascript:alert(1)", CSRF_TOKEN])),
    max_size=6,
)  # fmt: skip


@settings(SETTINGS, max_examples=200)
@given(
    url=st.sampled_from(FORMS),
    fields=FORM_FIELDS,
    raw=st.one_of(st.none(), BODIES),
    content_type=CONTENT_TYPES,
    csrf=st.booleans(),
    logged_in=st.booleans(),
)
def test_random_form_posts(world, url, fields, raw, content_type, csrf, logged_in):
    client = Client(enforce_csrf_checks=True)
    if logged_in:
        client.force_login(world)
    if csrf:
        client.cookies["csrftoken"] = CSRF_TOKEN
        fields = {**fields, "csrfmiddlewaretoken": CSRF_TOKEN}
    users_before = list(world.__class__.objects.order_by("pk").values_list("username", "password"))
    if raw is None:
        response = client.post(url, fields)
    else:
        response = client.generic("POST", url, raw, content_type=content_type)
    label = f"POST {url} {fields!r:.200} -> {response.status_code}"
    assert response.status_code < 500, label
    location = response.get("Location", "")
    assert not location.startswith(("//", "http:", "https:", "javascript:")), label  # no open redirect
    if response.status_code == 403:
        assert list(world.__class__.objects.order_by("pk").values_list("username", "password")) == users_before
    if not logged_in and url == "/accounts/login/" and response.status_code == 302:
        # Logged in only with the real credentials (and the CSRF token).
        assert csrf and fields.get("username") == "owner" and fields.get("password") == PASSWORD, label


def test_the_documented_codes_were_read():
    assert DOCUMENTED["not_found"] == 404 and DOCUMENTED["csrf_failed"] == 403 and DOCUMENTED["bad_format"] == 400


# NUL characters: PostgreSQL cannot store U+0000 (psycopg raises ValueError: a 500 before the fix). Each entry point
# refuses it with a 400 (or bad_frame) naming the field; run with DATABASE_URL=postgres://… to check PostgreSQL too.
NUL_PATCHES = [("title", "a\x00b"), ("model", "kimi\x00"), ("system_prompt", "be \x00 brief")]


@pytest.mark.parametrize(("field", "value"), NUL_PATCHES)
def test_nul_in_a_patch_is_a_400_naming_the_field(world, field, value):
    client = Client()
    client.force_login(world)
    before = _state()
    response = client.patch(f"/api/conversations/{IDS['own']}/", json.dumps({field: value}), "application/json")
    assert response.status_code == 400, response.content
    error = response.json()["error"]
    assert (error["code"], error["field"]) == ("bad_parameter", field) and "NUL" in error["message"]
    assert _state() == before


@pytest.mark.parametrize("q", ["\x00", "hello\x00", "你好\x00", "-\x00x"])
def test_nul_in_a_search_is_a_400_naming_q(world, q):
    client = Client()
    client.force_login(world)
    response = client.get("/api/search/", {"q": q})
    assert response.status_code == 400, response.content
    error = response.json()["error"]
    assert (error["code"], error["field"]) == ("bad_parameter", "q") and "NUL" in error["message"]


def test_nul_in_an_import_is_a_400_naming_the_field(world):
    from django.core.files.uploadedfile import SimpleUploadedFile

    client = Client()
    client.force_login(world)
    document = {"format": "kimichat.conversation.v1", "conversation": {"title": "t"},
                "messages": [{"role": "user", "content": "a\x00"}]}  # fmt: skip
    before = _state()
    response = client.post("/api/import/", {"file": SimpleUploadedFile("x.json", json.dumps(document).encode())})
    assert response.status_code == 400, response.content
    error = response.json()["error"]
    assert (error["code"], error["field"]) == ("bad_import", "[0].messages[0].content") and "NUL" in error["message"]
    assert _state() == before


@pytest.mark.parametrize(
    "frame",
    [
        {"conversation": {"system_prompt": "x\x00"}, "content": "hi"},
        {"content": "hi\x00"},
    ],
)
def test_nul_in_a_send_frame_is_a_bad_frame_naming_the_field(frame):
    from conversations.services.chat.frames import FrameError, parse_frame

    send = {"type": "send", "conversation_id": None, "client_msg_id": "6f1c2a9e-8d4b-4c1e-9a57-3b2d1e0f4a6b", **frame}
    with pytest.raises(FrameError) as caught:
        parse_frame(send)
    assert caught.value.code == "bad_frame"
    field = "system_prompt" if "conversation" in frame else "content"
    assert f"“{field}” contains a NUL character" in str(caught.value)
