"""How fast the history API answers for a user with a long past: the sidebar, a long conversation, search.

    .venv/bin/python bench/history.py

Seeds (bulk_create) one measured user with 1,000 conversations and 100,000 messages, and 10 more users with the
same, then times ``GET /api/conversations/`` (the sidebar page), ``GET /api/conversations/<id>/`` of a 1,000-message
conversation (the default page and ``limit=500``) and ``GET /api/search/?q=`` (a common word, a rare word, two
words), in process with Django's test client, counting queries with ``CaptureQueriesContext``. Runs on a scratch
SQLite file and on PostgreSQL (a database of its own on 127.0.0.1:5432, dropped afterwards; skipped with a notice
when PostgreSQL does not answer). Each backend runs in a child process of this script, since Django's settings are
read once per process.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import harness  # noqa: E402

DEFAULT_PG = "postgres://postgres@127.0.0.1:5432/kimichat_bench_history"
WORDS = (
    "the a of to and in is it that for on with as this be are was by at or from an but not have can you we they "
    "model answer question stream socket relay worker database index query cache latency token credit python "
    "django channel group delta message conversation sidebar search export import share link title prompt"
).split()
RARE = "zephyrine"  # in one message out of 10,000
COMMON = "latency"  # a vocabulary word: in many messages


def seed(users: int, conversations: int, messages: int, long_conversation: int) -> tuple[object, int]:
    """(the measured user, the id of its long conversation)."""
    from django.contrib.auth import get_user_model
    from django.utils import timezone

    from conversations.models import Conversation, Message

    rng = random.Random(7)
    now = timezone.now()
    user_model = get_user_model()
    measured, long_id = None, 0
    for index in range(users):
        user = user_model.objects.create_user(f"history{index}", password=None)
        convs = Conversation.objects.bulk_create(
            [
                Conversation(
                    owner=user,
                    model="kimi-k2.6",
                    title=f"Conversation {n} about {rng.choice(WORDS)}",
                    created_at=now - timezone.timedelta(minutes=conversations - n),
                    updated_at=now - timezone.timedelta(minutes=conversations - n),
                    pinned=n % 97 == 0,
                )
                for n in range(conversations)
            ],
            batch_size=1000,
        )
        # The newest conversation is the long one; the rest share the other messages evenly.
        long_conv = convs[-1]
        others = convs[:-1] or convs
        batch: list[Message] = []
        for n in range(messages):
            conv = long_conv if n < long_conversation else others[n % len(others)]
            words = rng.choices(WORDS, k=30)
            if n % 10_000 == 5:
                words[3] = RARE
            batch.append(
                Message(
                    conversation=conv,
                    role=Message.Role.USER if n % 2 == 0 else Message.Role.ASSISTANT,
                    content=" ".join(words),
                    status=Message.Status.COMPLETE,
                    model="kimi-k2.6",
                    created_at=now - timezone.timedelta(seconds=messages - n),
                    completed_at=now,
                )
            )
            if len(batch) >= 5000:
                Message.objects.bulk_create(batch)
                batch = []
        if batch:
            Message.objects.bulk_create(batch)
        if index == 0:
            measured, long_id = user, long_conv.pk
    return measured, long_id


def measure(client, path: str, repeat: int, budget: float = 15.0) -> dict:
    """``repeat`` timed calls after one warm-up call, fewer (at least 3) when they take more than ``budget`` s."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    times, queries, status, slowest = [], [], None, ("", 0.0)
    deadline = time.monotonic() + budget
    for n in range(repeat + 1):  # the first call warms caches and is not counted
        with CaptureQueriesContext(connection) as captured:
            started = time.perf_counter()
            response = client.get(path)
            elapsed = (time.perf_counter() - started) * 1000
        status = response.status_code
        times.append(elapsed)
        queries.append(len(captured.captured_queries))
        for query in captured.captured_queries:
            if float(query["time"]) > slowest[1]:
                slowest = (query["sql"], float(query["time"]))
        if n >= 3 and time.monotonic() > deadline:
            break
    times, queries = times[1:], queries[1:]
    return {
        "path": path,
        "status": status,
        "calls": len(times),
        "median_ms": statistics.median(times),
        "max_ms": max(times),
        "queries": sorted(set(queries)),
        "slowest_sql": slowest[0],
        "slowest_ms": slowest[1] * 1000,
    }


def explain(sql: str) -> str:
    """PostgreSQL's plan of a captured query, with real timings."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("EXPLAIN (ANALYZE, BUFFERS) " + sql)
        return "\n".join(row[0] for row in cursor.fetchall())


def inner(args) -> None:
    """In the child process: set up Django on the given database, seed, measure, print one JSON line."""
    scratch = Path(args.scratch)
    harness.setup_django(
        {
            "DJANGO_SETTINGS_MODULE": "kimichat.settings",
            "KIMICHAT_VAR_DIR": str(scratch),
            "DATABASE_URL": args.inner,
            "SECRET_KEY": "history-bench-" + os.urandom(8).hex(),
            "DEBUG": "false",
            "ALLOWED_HOSTS": "testserver,127.0.0.1",
            "SECURE_SSL_REDIRECT": "false",
            "LOG_LEVEL": "ERROR",
        }
    )
    from django.conf import settings
    from django.test import Client

    from conversations.models import Message

    settings.SESSION_COOKIE_SECURE = False
    started = time.perf_counter()
    user, long_id = seed(args.users, args.conversations, args.messages, args.long)
    # A bulk load leaves the planner without statistics (autovacuum would gather them a little later): without
    # them PostgreSQL guesses 15 matching rows for a word in 450,000 and picks a nested loop that takes 30 s.
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("VACUUM ANALYZE" if connection.vendor == "postgresql" else "ANALYZE")
    seeded = time.perf_counter() - started
    client = Client()
    client.force_login(user)
    paths = [
        ("sidebar page", "/api/conversations/"),
        (f"{args.long}-message conversation (default page)", f"/api/conversations/{long_id}/"),
        (f"{args.long}-message conversation (limit=500)", f"/api/conversations/{long_id}/?limit=500"),
        (f"search common word ({COMMON})", f"/api/search/?q={COMMON}"),
        (f"search rare word ({RARE})", f"/api/search/?q={RARE}"),
        ("search two words", "/api/search/?q=socket+latency"),
    ]
    rows = [{"what": name, **measure(client, path, args.repeat)} for name, path in paths]
    plans = {}
    if args.explain:
        for row in rows:
            if row["median_ms"] > args.explain and row["slowest_sql"].lstrip().upper().startswith("SELECT"):
                plans[row["what"]] = explain(row["slowest_sql"])
    total = Message.objects.count()
    print(json.dumps({"seed_seconds": seeded, "messages_total": total, "rows": rows, "plans": plans}))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=11, help="users seeded alike; the first one is measured")
    parser.add_argument("--conversations", type=int, default=1000, help="conversations per user")
    parser.add_argument("--messages", type=int, default=100_000, help="messages per user")
    parser.add_argument("--long", type=int, default=1000, help="messages in the measured long conversation")
    parser.add_argument("--repeat", type=int, default=20, help="timed calls per endpoint")
    parser.add_argument("--backends", default="sqlite,postgresql")
    parser.add_argument("--pg-url", default=DEFAULT_PG, help="a database of the bench's own: dropped and recreated")
    parser.add_argument(
        "--explain",
        type=float,
        default=0,
        metavar="MS",
        help="print the plan of the slowest query of any request slower than MS (PostgreSQL)",
    )
    parser.add_argument("--inner", help=argparse.SUPPRESS)
    parser.add_argument("--scratch", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.inner:
        inner(args)
        return 0

    info = harness.machine()
    print(f"machine: {info['cpus']} CPUs ({info['cpu_model']}), {info['memory_gb']} GB")
    print(
        f"seed: {args.users} users × {args.conversations} conversations, {args.messages} messages each "
        f"(one conversation of {args.long})"
    )
    failed = False
    for backend in args.backends.split(","):
        import tempfile

        scratch = tempfile.mkdtemp(prefix="kimichat-history-")
        if backend == "postgresql":
            why = harness.pg_available(args.pg_url)
            if why is not None:
                print(f"\nNOTICE: PostgreSQL not reachable ({why}); skipping PostgreSQL.")
                continue
            harness.recreate_pg_database(args.pg_url)
            url = args.pg_url
        else:
            url = f"sqlite:///{scratch}/history.sqlite3"
        load = harness.load()
        try:
            command = [sys.executable, __file__, "--inner", url, "--scratch", scratch]
            command += ["--users", str(args.users), "--conversations", str(args.conversations)]
            command += ["--messages", str(args.messages), "--long", str(args.long), "--repeat", str(args.repeat)]
            command += ["--explain", str(args.explain if backend == "postgresql" else 0)]
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
            f"\n{backend}: {data['messages_total']} messages seeded in {data['seed_seconds']:.0f} s; load {load}; "
            "median of the timed calls (a warm-up call first)"
        )
        harness.print_table(
            [
                {
                    "request": r["what"],
                    "calls": r["calls"],
                    "median ms": f"{r['median_ms']:.1f}",
                    "max ms": f"{r['max_ms']:.1f}",
                    "queries": ",".join(str(q) for q in r["queries"]),
                    "status": r["status"],
                }
                for r in data["rows"]
            ]
        )
        for what, plan in data["plans"].items():
            print(f"\nplan of the slowest query of '{what}':\n{plan}")
        failed |= any(r["status"] != 200 or len(r["queries"]) != 1 for r in data["rows"])
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
