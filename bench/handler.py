"""What Django's ASGI handler costs a request, in process: time, CPU, trips to a thread and threads started.

    .venv/bin/python bench/handler.py

Each request goes through the worker's HTTP application (``kimichat.asgi.django_asgi_app``) as daphne calls it: an
ASGI scope, the body, the response's messages collected; no socket. The requests: a page (the login form,
anonymous), the liveness check (no database, no template), a static file (WhiteNoise), KimiChat's API for scripts
(``GET /v1/user/credits`` without a key, answered 401 before any database trip, and with a key) and the web app's
JSON API (``GET /api/conversations/`` with a session). Each is made ``--repeat`` times after one to
warm up; printed per request: the wall-clock p50 and p90, the process's CPU (``time.process_time``, every thread's),
the synchronous calls run on a thread other than the event loop's (asgiref ``SyncToAsync``: each a hand-over to a
thread and back), those run on the loop itself, and the threads started. The handler's own cost, not the network's
or daphne's (bench/userapi.py measures those).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import harness  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=300, help="requests per route")
    args = parser.parse_args(argv)
    scratch = tempfile.mkdtemp(prefix="kimichat-handler-")
    harness.setup_django(
        {
            "DJANGO_SETTINGS_MODULE": "kimichat.settings",
            "KIMICHAT_VAR_DIR": scratch,
            "DATABASE_URL": f"sqlite:///{scratch}/bench.sqlite3",
            "SECRET_KEY": "bench-" + "x" * 50,
            "DEBUG": "false",
            "LOG_LEVEL": "ERROR",
            "SIGNUP_CREDITS": "100",
            "KIMI_API_KEY": "sk-bench",
            "KIMI_BASE_URL": "http://127.0.0.1:9/v1",  # never called
            "ALLOWED_HOSTS": "localhost",
            # The API counts each request against the user's rate limit: none here.
            "RATE_LIMIT_TIERS": '[{"above": 0, "per_minute": 1000000, "per_hour": 1000000, "per_day": 1000000}]',
        }
    )
    from django.core.management import call_command

    call_command("collectstatic", interactive=False, verbosity=0)  # DEBUG off: pages name the hashed files
    rows = asyncio.run(run(args.repeat))
    print(f"load {harness.load()}; {args.repeat} requests per route, in process (no socket)\n")
    harness.print_table(rows)
    return 0


async def run(repeat: int) -> list[dict]:
    from asgiref.sync import SyncToAsync, sync_to_async
    from django.conf import settings
    from django.contrib.auth import get_user_model
    from django.test import Client

    from conversations.services.apikeys import keys
    from kimichat.asgi import django_asgi_app

    def fixtures():
        user = get_user_model().objects.create_user(username="bench-handler", password="x" * 20)
        client = Client()
        client.force_login(user)
        return keys.create(user, name="bench").secret, client.cookies[settings.SESSION_COOKIE_NAME].value

    secret, session = await sync_to_async(fixtures)()
    routes = [
        ("liveness: GET /healthz", "/healthz", {}),
        ("page: GET /accounts/login/", "/accounts/login/", {}),
        ("static: GET /static/css/app.css", "/static/css/app.css", {}),
        ("API without a key (401)", "/v1/user/credits", {}),
        ("API: GET /v1/user/credits", "/v1/user/credits", {"authorization": f"Bearer {secret}"}),
        (
            "web JSON: GET /api/conversations/",
            "/api/conversations/",
            {"cookie": f"{settings.SESSION_COOKIE_NAME}={session}"},
        ),
    ]
    loop_thread = threading.get_ident()
    trips = {"thread": 0, "loop": 0, "started": 0}
    handler, start = SyncToAsync.thread_handler, threading.Thread.start

    def counting_handler(self, *args, **kwargs):
        trips["loop" if threading.get_ident() == loop_thread else "thread"] += 1
        return handler(self, *args, **kwargs)

    def counting_start(thread):
        trips["started"] += 1
        start(thread)

    rows = []
    SyncToAsync.thread_handler, threading.Thread.start = counting_handler, counting_start
    try:
        for name, path, headers in routes:
            status = await request(django_asgi_app, path, headers)
            walls, cpus = [], []
            for key in trips:
                trips[key] = 0
            for _ in range(repeat):
                wall, cpu = time.perf_counter(), time.process_time()
                again = await request(django_asgi_app, path, headers)
                assert again == status, (name, status, again)
                walls.append((time.perf_counter() - wall) * 1000)
                cpus.append((time.process_time() - cpu) * 1000)
            await asyncio.sleep(0.6)  # threads that end after a request end here, not in the next route's figures
            rows.append(
                {
                    "request": name,
                    "status": status,
                    "p50 ms": f"{statistics.median(walls):.2f}",
                    "p90 ms": f"{harness.percentile(walls, 90):.2f}",
                    "CPU ms": f"{sum(cpus) / repeat:.2f}",
                    "trips to a thread": f"{trips['thread'] / repeat:.1f}",
                    "calls on the loop": f"{trips['loop'] / repeat:.1f}",
                    "threads started": f"{trips['started'] / repeat:.1f}",
                }
            )
    finally:
        SyncToAsync.thread_handler, threading.Thread.start = handler, start
    return rows


async def request(app, path: str, headers: dict[str, str]) -> int:
    """One GET through the ASGI ``app`` (the tests' own in-process call); its status, the body read to its end."""
    from tests import asgi

    status, _headers, _body = await asgi.call(app, asgi.http_scope(path, headers, https=True))  # DEBUG off: https
    return status


if __name__ == "__main__":
    sys.exit(main())
