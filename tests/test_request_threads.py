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
