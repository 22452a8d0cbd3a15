"""kimichat/request_threads.py: where a request's synchronous steps run. Pages: the middleware and the view in one
trip to the request's thread. The user API (/v1/): on the event loop, no thread of its own. Driven in-process as
daphne drives it (an ASGI call); the thread count of 12 real streams is measured in tests/test_user_api.py."""

from __future__ import annotations

import threading

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.core.signals import request_started
from django.test import override_settings
from django.utils.deprecation import MiddlewareMixin

from conversations.services.apikeys import keys
from tests import asgi

seen: list[tuple[str, int]] = []  # (step, thread id) of the Recorder below


class Recorder(MiddlewareMixin):
    """Notes the thread each of its steps runs on."""

    def process_request(self, request):
        seen.append(("request", threading.get_ident()))

    def process_view(self, request, view, args, kwargs):
        seen.append(("view", threading.get_ident()))

    def process_response(self, request, response):
        seen.append(("response", threading.get_ident()))
        return response


class QueriesTheDatabase(MiddlewareMixin):
    def process_request(self, request):
        from django.contrib.auth import get_user_model

        get_user_model().objects.count()


class SyncOnly:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        return self.get_response(request)


async def call(app, path: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    return await asgi.call(app, asgi.http_scope(path, headers))


def handler():
    from kimichat.request_threads import Handler

    return Handler()


def with_middleware(*extra: str, drop: tuple[str, ...] = ()):
    from django.conf import settings

    kept = [m for m in settings.MIDDLEWARE if m not in drop]
    return override_settings(MIDDLEWARE=[*extra, *kept])


def test_only_the_user_apis_requests_take_the_api_chain():
    from kimichat.request_threads import API_PREFIXES, _route

    routes = {
        "/v1/chat/completions": "",
        "/kimichat/v1/messages": "/kimichat",
        "/api/conversations/": "",
        "/kimichat/api/v1/": "/kimichat",
        "/v1x": "",
    }
    api = [path for path, root in routes.items() if _route({"path": path, "root_path": root}).startswith(API_PREFIXES)]
    assert api == ["/v1/chat/completions", "/kimichat/v1/messages"]


def build(*extra: str):
    """The worker's application with ``extra`` middleware first."""
    with with_middleware(*extra):
        return handler()


@pytest.fixture
def secret(owner):
    return keys.create(owner, name="script").secret


@pytest.fixture
def recording(secret):
    return build("tests.test_request_threads.Recorder")


@pytest.mark.django_db(transaction=True)
async def test_an_api_request_runs_its_steps_on_the_loop_and_starts_no_thread(recording, secret):
    seen.clear()
    auth = {"authorization": f"Bearer {secret}"}
    assert (await call(recording, "/v1/user/credits", auth))[0] == 200  # warm: the database thread exists
    started = []
    real_start = threading.Thread.start

    def start(thread):
        started.append(thread.name)
        real_start(thread)

    def receiver(**kwargs):
        seen.append(("request_started", threading.current_thread().name))

    threading.Thread.start = start
    request_started.connect(receiver)
    try:
        status, headers, body = await call(recording, "/v1/user/credits", auth)
    finally:
        threading.Thread.start = real_start
        request_started.disconnect(receiver)
    assert status == 200 and b'"credits_remaining":"100"' in body
    assert started == []  # before: the request's own thread, and another to join it
    steps = seen[:3] + seen[4:]
    assert [step for step, _ in steps] == ["request", "view", "response"] * 2
    assert {ident for _, ident in steps} == {threading.get_ident()}  # the event loop's
    # The signals' receivers on the thread every /v1/ request shares: never on the loop, never a new one.
    assert seen[3] == ("request_started", "kimichat-api-steps_0")
    # The same headers as a page's: every middleware ran.
    for header in ("x-request-id", "content-security-policy", "x-content-type-options", "x-frame-options"):
        assert headers.get(header), header


@pytest.mark.django_db(transaction=True)
async def test_a_page_runs_its_middleware_and_view_in_one_trip_to_its_thread(recording):
    seen.clear()
    status, headers, _body = await call(recording, "/accounts/login/")
    assert status == 200 and headers.get("x-request-id") and headers.get("content-security-policy")
    assert [step for step, _ in seen] == ["request", "view", "response"]
    threads = {ident for _, ident in seen}
    assert len(threads) == 1 and threads != {threading.get_ident()}


@pytest.fixture
def querying(secret):
    return build("tests.test_request_threads.QueriesTheDatabase")


@pytest.mark.django_db(transaction=True)
async def test_an_api_step_that_would_query_the_database_on_the_loop_fails_loudly(querying, secret, caplog):
    """A middleware step that queried the database would block the loop: Django refuses it there, so the request
    fails rather than every stream stalling behind it (pages, on their own thread, are unaffected)."""
    app = querying
    status, _headers, _body = await call(app, "/v1/user/credits", {"authorization": f"Bearer {secret}"})
    assert status == 500
    assert "SynchronousOnlyOperation" in caplog.text and "objects.count()" in caplog.text  # that step's query
    assert (await call(app, "/accounts/login/"))[0] == 200


def test_a_sync_only_middleware_cannot_join_the_api_chain():
    with with_middleware("tests.test_request_threads.SyncOnly"):
        with pytest.raises(ImproperlyConfigured, match="SyncOnly must be async-capable"):
            handler()


def test_static_files_cannot_be_served_under_the_api():
    with override_settings(STATIC_URL="/v1/static/"):
        with pytest.raises(ImproperlyConfigured, match="STATIC_URL"):
            handler()
