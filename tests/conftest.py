"""Shared fixtures. Test users are few and shaped by role: the owner and an outsider."""

import threading
import time
import warnings

import pytest
from django.core.cache import cache

pytest_plugins = [
    "tests.fixtures.kimi",
    "tests.fixtures.ws",
    "tests.fixtures.credits",
    "tests.fixtures.browser",
    "tests.fixtures.attachments",
]

PASSWORD = "correct horse battery staple"


def pytest_collection_modifyitems(config, items):
    """A test that drives Chromium is a ``browser`` test, whether or not its module says so: the PostgreSQL pass
    leaves them out (``make test``), because the ORM calls a test makes while Playwright's event loop runs open
    connections in a context of their own, which nothing closes (PostgreSQL then cannot drop its test database)."""
    for item in items:
        if "chromium" in getattr(item, "fixturenames", ()) and item.get_closest_marker("browser") is None:
            item.add_marker(pytest.mark.browser)


@pytest.fixture(autouse=True)
def _clear_cache():
    """Rate-limit counters and cached model lists live in the cache (and the model list in the client module's
    own copy too), and so does the throttle of the provider's header snapshots: each test starts from none."""
    from conversations.kimi import client, provider_state

    cache.clear()
    client._models_memo.clear()
    provider_state.headers.reset()
    yield
    cache.clear()
    client._models_memo.clear()
    provider_state.headers.reset()


@pytest.fixture(autouse=True)
def _no_automatic_titles(settings):
    """A chat's first answer starts a title request in the background (services/personal/titles.py): off unless a
    test turns it on (tests/test_titles.py), so tests that count ledger rows and upstream requests see only theirs."""
    settings.KIMICHAT_AUTO_TITLES = False


@pytest.fixture
def make_user(django_user_model):
    def make(username: str, **extra):
        return django_user_model.objects.create_user(username=username, password=PASSWORD, **extra)

    return make


@pytest.fixture
def fresh_minute():
    """Rate limits count requests in fixed windows (a minute starts at :00): a test that fills the minute's limit
    and expects the next request refused waits, if need be, so that all its requests fall in one minute (a test that
    crossed :00 saw its counts start again). Up to 15 s, once in four runs."""
    left = 60 - time.time() % 60
    if left < 15:
        time.sleep(left + 0.05)


@pytest.fixture
def owner(make_user):
    return make_user("owner")


@pytest.fixture
def outsider(make_user):
    return make_user("outsider")


@pytest.fixture
def owner_client(client, owner):
    client.force_login(owner)
    return client


@pytest.fixture(autouse=True)
def _close_async_thread_connections():
    """Async tests reach the database from asgiref's sync_to_async thread; close its connection after each test so
    PostgreSQL can drop the test database at the end (the main thread's are closed by Django itself)."""
    yield
    from asgiref.sync import SyncToAsync
    from django.db import connections

    from conversations.services import db_threads

    try:
        SyncToAsync.single_thread_executor.submit(connections.close_all).result(timeout=10)
        # The send threads (PostgreSQL) too: channels.testing's communicators turn channels' own closing of old
        # connections off while they run. One call per thread: each waits at the barrier until all have started.
        for executor in db_threads._send_executors.values():
            threads = executor._max_workers
            barrier = threading.Barrier(threads, timeout=10)
            closing = [executor.submit(_close_after, barrier, connections) for _ in range(threads)]
            for future in closing:
                future.result(timeout=10)
    except Exception as exc:  # noqa: BLE001 - a busy or broken thread must not fail the next test's setup
        warnings.warn(f"could not close the sync_to_async thread's connections: {exc!r}", stacklevel=1)


def _close_after(barrier, connections) -> None:
    barrier.wait()
    connections.close_all()
