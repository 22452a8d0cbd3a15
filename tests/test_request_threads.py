"""kimichat/request_threads.py: which requests share the user API's thread (the streams' thread count is measured
on a real worker in tests/test_user_api.py)."""

from __future__ import annotations


def test_only_the_user_apis_requests_share_the_api_thread():
    from kimichat.request_threads import SHARED_PREFIXES, _route

    routes = {
        "/v1/chat/completions": "",
        "/kimichat/v1/messages": "/kimichat",
        "/api/conversations/": "",
        "/kimichat/api/v1/": "/kimichat",
        "/v1x": "",
    }
    shared = [
        path for path, root in routes.items() if _route({"path": path, "root_path": root}).startswith(SHARED_PREFIXES)
    ]
    assert shared == ["/v1/chat/completions", "/kimichat/v1/messages"]


def test_an_idle_thread_runs_calls_in_order_one_at_a_time_then_ends():
    import threading
    import time

    from kimichat.request_threads import IdleThread

    executor = IdleThread(idle=0.1)
    seen = []

    def step(n):
        seen.append((n, threading.current_thread()))
        time.sleep(0.01)
        return n

    futures = [executor.submit(step, n) for n in range(5)]
    assert [f.result(timeout=5) for f in futures] == [0, 1, 2, 3, 4]
    assert [n for n, _ in seen] == [0, 1, 2, 3, 4] and len({thread for _, thread in seen}) == 1
    first = seen[0][1]
    first.join(timeout=5)  # it ends once idle
    assert not first.is_alive()
    assert executor.submit(step, 5).result(timeout=5) == 5  # a later call: a new thread
    assert seen[-1][1] is not first


def test_an_idle_thread_hands_back_exceptions_and_refuses_work_after_shutdown():
    import pytest

    from kimichat.request_threads import IdleThread

    executor = IdleThread(idle=0.05)

    def fail():
        raise ValueError("bad step")

    with pytest.raises(ValueError, match="bad step"):
        executor.submit(fail).result(timeout=5)
    executor.shutdown()
    with pytest.raises(RuntimeError):
        executor.submit(print)


def test_an_idle_thread_closes_its_database_connections_when_it_ends(db):
    import time

    from django.db import connections

    from kimichat.request_threads import IdleThread

    executor = IdleThread(idle=0.05)

    def query():
        with connections["default"].cursor() as cursor:
            cursor.execute("SELECT 1")
        return connections["default"]

    used = executor.submit(query).result(timeout=5)
    assert used.connection is not None
    deadline = time.monotonic() + 5
    while used.connection is not None:  # closed as the thread ends
        assert time.monotonic() < deadline
        time.sleep(0.01)
