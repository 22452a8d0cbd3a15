"""How fast a conversation with many branches opens and switches, and what the send path reads of it.

    .venv/bin/python bench/branches.py

Seeds one user with ``--background`` messages in other conversations and one conversation of ``--branches``
branches × ``--per-branch`` messages (defaults 50 × 20 = 1,000 messages): branch 0 is a thread, each later branch an
edit of a question of the branch before it, and the last branch is the active one (its path ~300 messages deep).
Then times ``GET /api/conversations/<id>/`` (default page and ``limit=500``), ``POST …/branch/`` (switching between
two branches that part near the root, so the whole path changes), and the send path's read of the active branch
(``sending._thread`` + ``context.build_messages``), in process with Django's test client, counting queries. Runs on a
scratch SQLite file and on PostgreSQL (a database of its own, dropped afterwards; skipped when it does not answer).
Each backend runs in a child process (Django's settings are read once per process).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import harness  # noqa: E402
import history  # noqa: E402

DEFAULT_PG = "postgres://postgres@127.0.0.1:5432/kimichat_bench_branches"


def seed(branch_count: int, per_branch: int, background: int):
    """(the user, the conversation, the first message of each branch, the leaf of each branch)."""
    from django.contrib.auth import get_user_model

    from conversations.models import Conversation, Message
    from conversations.services.history import branches

    user = get_user_model().objects.create_user("branches", password=None)
    others = Conversation.objects.bulk_create(
        [Conversation(owner=user, model="kimi-k2.6", title=f"Other {n}") for n in range(max(1, background // 100))]
    )
    Message.objects.bulk_create(
        [
            Message(conversation=others[n % len(others)], role="user" if n % 2 == 0 else "assistant", content=f"x {n}")
            for n in range(background)
        ],
        batch_size=1000,
    )
    conversation = Conversation.objects.create(owner=user, model="kimi-k2.6", title="Many branches")
    made: list[list[int]] = []
    parent_of: dict[int, int | None] = {}
    for k in range(branch_count):
        parent = None
        if k:
            forked = made[k - 1][2 * (k % max(1, per_branch // 2 - 1)) + 2 if per_branch > 4 else 0]
            parent = parent_of[forked]
        ids = []
        for n in range(per_branch):
            message = Message.objects.create(
                conversation=conversation,
                role="user" if n % 2 == 0 else "assistant",
                content=f"branch {k} message {n}: " + "words of a turn " * 20,
                parent_id=parent,
                model="kimi-k2.6",
            )
            parent_of[message.pk] = parent
            parent = message.pk
            ids.append(message.pk)
        made.append(ids)
    branches.switch_branch(conversation, made[-1][-1])
    # The baseline: one thread of as many messages, the same texts, measured alike under the same load.
    linear = Conversation.objects.create(owner=user, model="kimi-k2.6", title="One thread")
    parent = None
    for n in range(branch_count * per_branch):
        parent = Message.objects.create(
            conversation=linear,
            role="user" if n % 2 == 0 else "assistant",
            content=f"thread message {n}: " + "words of a turn " * 20,
            parent_id=parent,
            model="kimi-k2.6",
        ).pk
    return user, conversation, made, linear


def time_calls(call, repeat: int) -> dict:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    times, queries = [], []
    for n in range(repeat + 1):  # the first call warms caches and is not counted
        with CaptureQueriesContext(connection) as captured:
            started = time.perf_counter()
            call(n)
            elapsed = (time.perf_counter() - started) * 1000
        if n:
            times.append(elapsed)
            queries.append(len(captured.captured_queries))
    return {
        "calls": len(times),
        "median_ms": statistics.median(times),
        "max_ms": max(times),
        "queries": sorted(set(queries)),
    }


def inner(args) -> None:
    scratch = Path(args.scratch)
    harness.setup_django(
        {
            "DJANGO_SETTINGS_MODULE": "kimichat.settings",
            "KIMICHAT_VAR_DIR": str(scratch),
            "DATABASE_URL": args.inner,
            "SECRET_KEY": "branches-bench-" + os.urandom(8).hex(),
            "DEBUG": "false",
            "ALLOWED_HOSTS": "testserver,127.0.0.1",
            "SECURE_SSL_REDIRECT": "false",
            "LOG_LEVEL": "ERROR",
        }
    )
    from django.conf import settings
    from django.db import connection
    from django.test import Client

    from conversations.services.chat import sending
    from conversations.services.chat.context import build_messages

    settings.SESSION_COOKIE_SECURE = False
    started = time.perf_counter()
    user, conversation, made, linear = seed(args.branches, args.per_branch, args.background)
    with connection.cursor() as cursor:
        cursor.execute("VACUUM ANALYZE" if connection.vendor == "postgresql" else "ANALYZE")
    seeded = time.perf_counter() - started
    client = Client()
    client.force_login(user)
    total = conversation.messages.count()
    path_length = conversation.messages.current().count()
    url = f"/api/conversations/{conversation.pk}/"
    baseline = f"/api/conversations/{linear.pk}/"
    rows = [
        {"what": "baseline, one thread: default page (50)", **history.measure(client, baseline, args.repeat)},
        {"what": "open: default page (50)", **history.measure(client, url, args.repeat)},
        {"what": "baseline, one thread: limit=500", **history.measure(client, baseline + "?limit=500", args.repeat)},
        {"what": "open: limit=500", **history.measure(client, url + "?limit=500", args.repeat)},
    ]
    # Back and forth between branch 1's leaf and the last branch's leaf: they part at the first fork.
    targets = [made[1][-1], made[-1][-1]]

    def switch(n):
        body = json.dumps({"message_id": targets[n % 2]})
        response = client.post(url + "branch/", body, content_type="application/json")
        assert response.status_code == 200, response.content[:300]

    rows.append({"what": "switch branch (POST …/branch/)", **time_calls(switch, args.repeat)})

    def thread(_n):
        messages = sending._thread(conversation, "kimi-k2.6")
        build_messages(messages, model="kimi-k2.6", system_prompt="", max_tokens=None, thinks=False)

    rows.append({"what": "send path: read + build the branch", **time_calls(thread, args.repeat)})
    print(json.dumps({"seed_seconds": seeded, "messages": total, "path": path_length, "rows": rows}))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--branches", type=int, default=50)
    parser.add_argument("--per-branch", type=int, default=20)
    parser.add_argument("--background", type=int, default=20_000, help="the user's messages in other conversations")
    parser.add_argument("--repeat", type=int, default=20, help="timed calls per measurement")
    parser.add_argument("--backends", default="sqlite,postgresql")
    parser.add_argument("--pg-url", default=DEFAULT_PG, help="a database of the bench's own: dropped and recreated")
    parser.add_argument("--inner", help=argparse.SUPPRESS)
    parser.add_argument("--scratch", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.inner:
        inner(args)
        return 0

    info = harness.machine()
    print(f"machine: {info['cpus']} CPUs ({info['cpu_model']}), {info['memory_gb']} GB")
    print(f"seed: {args.branches} branches × {args.per_branch} messages, {args.background} other messages")
    failed = False
    for backend in args.backends.split(","):
        scratch = tempfile.mkdtemp(prefix="kimichat-branches-")
        if backend == "postgresql":
            why = harness.pg_available(args.pg_url)
            if why is not None:
                print(f"\nNOTICE: PostgreSQL not reachable ({why}); skipping PostgreSQL.")
                continue
            harness.recreate_pg_database(args.pg_url)
            url = args.pg_url
        else:
            url = f"sqlite:///{scratch}/branches.sqlite3"
        load = harness.load()
        try:
            command = [sys.executable, __file__, "--inner", url, "--scratch", scratch]
            command += ["--branches", str(args.branches), "--per-branch", str(args.per_branch)]
            command += ["--background", str(args.background), "--repeat", str(args.repeat)]
            done = subprocess.run(command, capture_output=True, text=True, check=False)  # noqa: S603
        finally:
            if backend == "postgresql":
                harness.drop_pg_database(args.pg_url)
            import shutil

            shutil.rmtree(scratch, ignore_errors=True)
        if done.returncode != 0:
            print(f"\n{backend}: FAILED\n{done.stderr[-3000:]}")
            failed = True
            continue
        data = json.loads(done.stdout.strip().splitlines()[-1])
        print(
            f"\n{backend}: {data['messages']} messages in the conversation, active path {data['path']}, seeded in "
            f"{data['seed_seconds']:.0f} s; load {load}; median of the timed calls (a warm-up call first)"
        )
        harness.print_table(
            [
                {
                    "request": r["what"],
                    "calls": r["calls"],
                    "median ms": f"{r['median_ms']:.1f}",
                    "max ms": f"{r['max_ms']:.1f}",
                    "queries": ",".join(str(q) for q in r["queries"]),
                }
                for r in data["rows"]
            ]
        )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
