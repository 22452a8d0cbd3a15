"""CPU time and queries per operation of an answer's fixed costs, in process: figures the machine's load hardly moves.

    .venv/bin/python bench/sendpath.py                   # SQLite
    .venv/bin/python bench/sendpath.py --database-url postgres://postgres@127.0.0.1:5432/kimichat_bench_sendpath

What one chat costs the worker besides relaying its pieces, each operation as the websocket path runs it on the
database thread: the per-frame session check, the rate limit + ``prepare_send`` of a new chat and of a chat with
history, a new chat as the socket sends it (``bulk_send.prepare_sends``: alone, a batch of one; and in a batch), the
final store (``finish_message``: the answer's row, its settlement on the ledger; as the registry stores it,
``storing.finish_many``: alone, a batch of one; and in a batch), and the same for the user API's
requests and their settlements (alone and together). Each is run ``--repeat`` times for ``--rounds`` rounds on
fresh users; printed: the lowest round's CPU per call (``time.process_time``: this thread's own CPU, not the wall
clock a busy machine stretches), the Python function calls per call (``sys.setprofile``, one more round: the same on
a busy machine) and the queries per call.
A burst's sends queue on the one database thread a worker has, so their sum is the floor of a burst's last first
delta. Last, an upstream request's own cost under httpx on each transport (``KIMI_HTTP_TRANSPORT``), against a
loopback peer that answers at once (its CPU is the process's: a transport's own threads count).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import harness  # noqa: E402

MODEL = harness.MODEL


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=30, help="calls per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--history", type=int, default=40, help="messages in the conversation of a later send")
    parser.add_argument("--database-url", default=None, help="default: a scratch SQLite file")
    args = parser.parse_args(argv)

    scratch = tempfile.mkdtemp(prefix="kimichat-sendpath-")
    url = args.database_url or f"sqlite:///{scratch}/bench.sqlite3"
    postgres = url.startswith("postgres")
    if postgres:
        harness.recreate_pg_database(url)
    try:
        harness.setup_django(
            {
                "DJANGO_SETTINGS_MODULE": "kimichat.settings",
                "KIMICHAT_VAR_DIR": scratch,
                "DATABASE_URL": url,
                "SECRET_KEY": "bench-" + "x" * 50,
                "DEBUG": "false",
                "LOG_LEVEL": "WARNING",
                "SIGNUP_CREDITS": "100000",
                "KIMI_API_KEY": "sk-bench",
                "KIMI_BASE_URL": "http://127.0.0.1:9/v1",  # never called: the model list is passed in
            }
        )
        rows = run(args) + transport_rows(args)
    finally:
        from django.db import connections

        connections.close_all()
        if postgres:
            harness.drop_pg_database(url)
    print(f"load {harness.load()}; database {url.split(':')[0]}; lowest of {args.rounds} rounds of {args.repeat}\n")
    harness.print_table(rows)
    return 0


def run(args) -> list[dict]:
    from django.contrib.auth import get_user_model
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from conversations.kimi.events import Usage
    from conversations.models import Message
    from conversations.services.accounts import sessions
    from conversations.services.apikeys import metering
    from conversations.services.chat import bulk_send, sending, storing

    user_model = get_user_model()
    bench = harness.Bench.__new__(harness.Bench)
    bench.sessions = []
    total = args.repeat * (args.rounds + 1) + 1
    harness.Bench.ensure_users(bench, total)
    users = list(user_model.objects.order_by("id")[:total])
    known = [MODEL]

    sessions_by_user = {user.pk: key for user, key in zip(users, bench.sessions, strict=True)}

    def send(user, conversation_id=None, marker=""):
        # As the consumer does for a send frame: the session check, the rate limit, the preparation.
        assert sessions.session_is_valid(sessions_by_user[user.pk], user.pk)
        balance = sending.admit(user)  # returns the balance it read (None before it did)
        return sending.prepare_send(
            user,
            **({"balance": balance} if balance is not None else {}),
            conversation_id=conversation_id,
            content=f"Benchmark stream {marker} says hello, a question of a few words.",
            client_msg_id=uuid.uuid4(),
            model=MODEL,
            known_models=known,
        )

    # Conversations with history, for the later sends: --history messages each.
    threads = {}
    for user in users:
        accepted = send(user)
        for i in range(args.history // 2 - 1):
            storing.finish_message(
                accepted.assistant.pk,
                status=Message.Status.COMPLETE,
                content="An answer of a few dozen words. " * 8,
                reasoning="",
                seq=1,
                usage=Usage(prompt_tokens=100 + i, completion_tokens=60, total_tokens=160 + i),
                reservation=accepted.reservation,
            )
            accepted = send(user, accepted.conversation.pk)
        storing.finish_message(
            accepted.assistant.pk,
            status=Message.Status.COMPLETE,
            content="Done.",
            reasoning="",
            seq=1,
            reservation=accepted.reservation,
        )
        threads[user.pk] = accepted.conversation.pk
    pending = []  # answers still streaming, for finish_message

    def new_chat(i):
        pending.append(send(users[i], marker=str(i)))

    def later_send(i):
        pending.append(send(users[i], threads[users[i].pk], marker=str(i)))

    def finish(i):
        accepted = pending.pop()
        storing.finish_message(
            accepted.assistant.pk,
            status=Message.Status.COMPLETE,
            content="An answer of a few dozen words. " * 8,
            reasoning="",
            seq=40,
            finish_reason="stop",
            usage=Usage(prompt_tokens=120, completion_tokens=60, total_tokens=180),
            reservation=accepted.reservation,
        )

    def final_of(accepted):
        return storing.Final(
            accepted.assistant.pk,
            {
                "status": Message.Status.COMPLETE,
                "content": "An answer of a few dozen words. " * 8,
                "reasoning": "",
                "seq": 40,
                "finish_reason": "stop",
                "usage": Usage(prompt_tokens=120, completion_tokens=60, total_tokens=180),
                "reservation": accepted.reservation,
                "continued": None,
            },
        )

    def finish_together(indices):
        # As answers that end together are stored (services/chat/registry.py): one batch, one transaction.
        finals = [final_of(pending.pop()) for _ in indices]
        assert not [o for o in storing.finish_many(finals) if isinstance(o, Exception)]

    def check(i):
        sessions.session_is_valid(bench.sessions[i], users[i].pk)

    def new_chats_together(indices):
        # As a burst's sends reach the database thread: one batch (services/chat/bulk_send.py), admission included.
        batch = [
            bulk_send.Pending(
                users[i],
                {
                    "session_key": sessions_by_user[users[i].pk],
                    "language": None,
                    "conversation_id": None,
                    "content": f"Benchmark stream {i} says hello, a question of a few words.",
                    "client_msg_id": uuid.uuid4(),
                    "model": MODEL,
                    "known_models": known,
                    "new_conversation": {},
                    "attachments": (),
                },
            )
            for i in indices
        ]
        for outcome in bulk_send.prepare_sends(batch):
            assert isinstance(outcome, sending.Accepted), outcome
            pending.append(outcome)

    from conversations.api_v1 import common
    from conversations.kimi.params import ChatRequest
    from conversations.services.apikeys import keys

    secrets = {user.pk: keys.create(user, name="bench").secret for user in users}

    def api_request(i):
        # As POST /v1/chat/completions admits a request: the key (with its owner's approval and limits), then the
        # model's allow-list, the rate limit and the reservation (api_v1/common.accept, without the HTTP).
        key, user, _lim = common._authenticate(secrets[users[i].pk], "127.0.0.1", True)
        request = ChatRequest(model=MODEL, messages=[{"role": "user", "content": f"API stream {i} says hello."}])
        request.max_tokens = 1024
        reservation, _lim = common._admit(key.pk, user, common.Prepared(request=request, prompt_tokens=12))
        api_pending.append(reservation)

    api_pending = []

    def api_requests_together(indices):
        # As requests that arrive together are admitted: their key checks in one batch, then their admissions.
        checked = common._authenticate_many([(secrets[users[i].pk], "127.0.0.1", True, "en") for i in indices])
        waiting = []
        for i, (key, user, _lim) in zip(indices, checked, strict=True):
            request = ChatRequest(model=MODEL, messages=[{"role": "user", "content": f"API stream {i} says hello."}])
            request.max_tokens = 1024
            waiting.append((key, user, common.Prepared(request=request, prompt_tokens=12), "en"))
        for reservation, _lim in common._admit_many(waiting):
            api_pending.append(reservation)

    def api_finish(i):
        metering.finish(
            api_pending.pop(),
            usage=Usage(prompt_tokens=12, completion_tokens=60, total_tokens=72),
            estimated=False,
            generated=True,
        )

    def api_finish_together(indices):
        # As requests that end together are settled (api_v1/common.Run.finish): one batch, one transaction.
        usage = Usage(prompt_tokens=12, completion_tokens=60, total_tokens=72)
        endings = [metering.Ending(api_pending.pop(), usage, False, True) for _ in indices]
        assert all(cost is not None for cost in metering.finish_many(endings))

    operations = [
        ("session check (sessions.session_is_valid)", check, False),
        ("send, new chat (session check + admit + prepare_send)", new_chat, False),
        ("final store of it (finish_message)", finish, False),
        (
            "send, new chat alone, as the socket sends it (bulk_send.prepare_sends of one)",
            lambda i: new_chats_together([i]),
            False,
        ),
        (
            "final store of it alone, as the registry stores it (storing.finish_many of one)",
            lambda i: finish_together([i]),
            False,
        ),
        (f"send, new chat, {args.repeat} in one batch (bulk_send.prepare_sends), per send", new_chats_together, True),
        (f"their final stores, {args.repeat} together (storing.finish_many), per answer", finish_together, True),
        (f"send, {args.history}-message chat (session check + admit + prepare_send)", later_send, False),
        ("final store of it (finish_message)", finish, False),
        ("user API request admission (api_v1/common: key, limits, allow-list, reservation)", api_request, False),
        ("its settlement (metering.finish)", api_finish, False),
        (
            "user API request alone, as the server admits it (key check + admission, each a batch of one)",
            lambda i: api_requests_together([i]),
            False,
        ),
        (
            "its settlement alone, as the server settles it (metering.finish_many of one)",
            lambda i: api_finish_together([i]),
            False,
        ),  # fmt: skip
        (
            f"user API admission, {args.repeat} together (key checks + admissions), per request",
            api_requests_together,
            True,
        ),
        (f"their settlements, {args.repeat} together (metering.finish_many), per request", api_finish_together, True),
    ]
    rows = []
    for name, operation, batched in operations:
        best, queries = float("inf"), 0
        for r in range(args.rounds):
            indices = range(1 + r * args.repeat, 1 + (r + 1) * args.repeat)
            connection.queries_log.clear()  # a full log (9,000 queries) would make the count below wrong
            with CaptureQueriesContext(connection) as captured:
                started = time.process_time()
                if batched:
                    operation(indices)
                else:
                    for i in indices:
                        operation(i)
                spent = (time.process_time() - started) / args.repeat
            best = min(best, spent)
            queries = len(captured.captured_queries) / args.repeat
        # Python function calls per call, counted over one more round: a figure the load cannot move. (Not cProfile:
        # bench/profile.py shadows the standard library's ``profile`` module that it imports.)
        indices = range(1 + args.rounds * args.repeat, 1 + (args.rounds + 1) * args.repeat)
        counted = [0]

        def count(frame, event, arg, counted=counted):
            if event == "call":
                counted[0] += 1

        sys.setprofile(count)
        try:
            if batched:
                operation(indices)
            else:
                for i in indices:
                    operation(i)
        finally:
            sys.setprofile(None)
        calls = counted[0] / args.repeat
        rows.append(
            {
                "operation": name,
                "CPU ms per call": f"{best * 1000:.2f}",
                "Python calls per call": f"{calls:,.0f}",
                "queries": f"{queries:g}",
            }
        )
    return rows


def transport_rows(args) -> list[dict]:
    """An upstream request's cost under httpx, per transport (conversations/kimi/transport.py): GET to a loopback
    peer that answers at once, on one event loop, ``--repeat`` × 10 requests a round."""
    import asyncio

    import httpx

    from conversations.kimi.transport import make_transport

    async def measure(name: str) -> dict:
        async def answer(reader, writer):
            with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
                while await reader.readuntil(b"\r\n\r\n"):
                    writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                    await writer.drain()

        server = await asyncio.start_server(answer, "127.0.0.1", 0)
        url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/v1/models"
        transport = make_transport(name, httpx.Limits(max_connections=10))
        calls = args.repeat * 10
        try:
            async with httpx.AsyncClient(transport=transport) as client:
                for _ in range(calls):  # warm: the pool's connection, the proxies read from the environment
                    await client.get(url)
                best = float("inf")
                for _ in range(args.rounds):
                    started = time.process_time()
                    for _ in range(calls):
                        await client.get(url)
                    best = min(best, (time.process_time() - started) / calls)
                counted = [0]

                def count(frame, event, arg):
                    if event == "call":
                        counted[0] += 1

                sys.setprofile(count)
                try:
                    for _ in range(calls):
                        await client.get(url)
                finally:
                    sys.setprofile(None)
        finally:
            server.close()
        return {
            "operation": f"an upstream request through httpx, {name} transport (loopback, answered at once)",
            "CPU ms per call": f"{best * 1000:.2f}",
            "Python calls per call": f"{counted[0] / calls:,.0f}",
            "queries": "0",
        }

    return [asyncio.run(measure(name)) for name in ("aiohttp", "httpx")]


if __name__ == "__main__":
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "kimichat.settings")
    sys.exit(main())
