"""Soak test: many websocket users chatting without pause against one real daphne worker and the offline Kimi
server, with faults injected, then a check that nothing was lost.

    .venv/bin/python bench/soak.py                      # 200 users, 10 minutes, fresh SQLite file
    .venv/bin/python bench/soak.py --users 20 --duration 60 --json var/soak.json
    .venv/bin/python bench/soak.py --database-url postgres://... --redis-url redis://...   # an already migrated DB

Each user sends a message, reads the answer to its `done`, thinks a moment and sends again (a new conversation every
few turns). ``--error-rate`` of the sends ask the offline server for an error mid-stream (``[[fault:error_midstream]]``)
and ``--close-rate`` close their tab after the first delta, reconnect, resubscribe and wait for the answer there.

At the end every send is checked in the database: an accepted send must have its user message and an answer in a
final status (else it counts as *lost*), the status stored must be the one the client was shown, a refused send
must have stored nothing, and the credit ledger must add up. Reported: sends, answers by status, refusals by code,
lost, latency (send → `done`) percentiles, and the worker's RSS when idle, after the warm-up and at the end.
Exit status 1 when anything was lost or the RSS grew more than ``--max-rss-growth`` after the warm-up.

Not part of `make test` (tests/test_reliability_soak.py runs a few seconds of it).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import websockets

ROOT = Path(__file__).resolve().parents[1]
FINAL = {"complete", "stopped", "error", "interrupted"}
MODEL = "kimi-k2-turbo-preview"  # no reasoning: one stream of content per answer


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, default=200)
    parser.add_argument("--duration", type=float, default=600.0, help="seconds of sending (answers then finish)")
    parser.add_argument("--warmup", type=float, default=60.0, help="seconds before the 'start' RSS is taken")
    parser.add_argument("--error-rate", type=float, default=0.05)
    parser.add_argument("--close-rate", type=float, default=0.05)
    parser.add_argument("--tokens", default="20:60", help="answer length range, pieces")
    parser.add_argument("--rate", type=int, default=20, help="tokens per second of each answer")
    parser.add_argument("--think", default="1:4", help="pause between a done and the next send, seconds")
    parser.add_argument("--turns", type=int, default=6, help="turns per conversation before starting a new one")
    parser.add_argument("--database-url", default="", help="an already migrated database (default: a fresh SQLite)")
    parser.add_argument("--redis-url", default="")
    parser.add_argument("--max-rss-growth", type=float, default=0.10)
    parser.add_argument("--json", default="", help="also write the report here")
    parser.add_argument("--seed", type=int, default=1)
    return parser.parse_args(argv)


def _range(text: str) -> tuple[float, float]:
    low, _, high = text.partition(":")
    return float(low), float(high or low)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def wait_listening(port: int, process: subprocess.Popen, path: str | None = None, timeout: float = 60) -> None:
    """Until the port accepts connections (and ``path`` answers 200, when given)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{process.args[:3]} exited with {process.returncode}")
        with contextlib.suppress(OSError):
            if path is None:
                socket.create_connection(("127.0.0.1", port), timeout=2).close()
                return
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2):  # noqa: S310 - loopback
                return
        time.sleep(0.2)
    raise RuntimeError(f"port {port} did not answer")


# --- the stack ------------------------------------------------------------------------------------------------------


class Stack:
    """The offline Kimi server and one daphne worker, each its own process, logs in a temporary directory."""

    def __init__(self, args, workdir: Path):
        self.args, self.workdir = args, workdir
        self.database_url = args.database_url or f"sqlite:///{workdir / 'soak.sqlite3'}"
        self.processes: list[subprocess.Popen] = []

    def env(self, **extra) -> dict:
        env = {**os.environ, "DATABASE_URL": self.database_url, "DJANGO_SETTINGS_MODULE": "kimichat.settings"}
        env.pop("REDIS_URL", None)
        if self.args.redis_url:
            env["REDIS_URL"] = self.args.redis_url
        env.update(extra)
        return env

    def _spawn(self, name: str, command: list[str], **env) -> subprocess.Popen:
        log = open(self.workdir / f"{name}.log", "wb")  # noqa: SIM115 - closed with the process at exit
        process = subprocess.Popen(command, cwd=ROOT, env=self.env(**env), stdout=log, stderr=subprocess.STDOUT)
        self.processes.append(process)
        return process

    def start(self) -> None:
        kimi_port, self.port = free_port(), free_port()
        kimi = self._spawn("offlinekimi", [sys.executable, "manage.py", "offlinekimi", "--port", str(kimi_port)])
        self.url = f"http://127.0.0.1:{self.port}"
        self.worker = self._spawn(
            "daphne",
            [
                sys.executable,
                "-m",
                "kimichat.serve",
                "-v",
                "0",
                "-b",
                "127.0.0.1",
                "-p",
                str(self.port),
                "kimichat.asgi:application",
            ],
            KIMI_BASE_URL=f"http://127.0.0.1:{kimi_port}/v1",
            KIMI_API_KEY="offline-kimi-key",
            DEBUG="true",
            ALLOWED_HOSTS="127.0.0.1,localhost",
            LOG_LEVEL="WARNING",  # a line per failed answer is expected here; per request is noise
            RATE_LIMIT_TIERS=json.dumps([{"above": 0, "per_minute": 1000, "per_hour": 60000, "per_day": 1000000}]),
            MAX_CONCURRENT_ANSWERS="3",
        )
        wait_listening(kimi_port, kimi)
        wait_listening(self.port, self.worker, "/healthz")

    def stop(self) -> None:
        for process in reversed(self.processes):
            if process.poll() is None:
                process.terminate()
                try:
                    process.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    process.kill()


# --- the database side (synchronous Django, before and after the load) ---------------------------------------------


def setup_django(stack: Stack, migrate: bool) -> None:
    os.environ.update(stack.env())
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()
    if migrate:
        from django.core.management import call_command

        call_command("migrate", verbosity=0)


def make_users(count: int) -> list[tuple[int, str]]:
    """Users with plenty of credits and a session each: (user id, session key)."""
    from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY, get_user_model
    from django.contrib.sessions.backends.db import SessionStore

    from conversations.services.billing import credits

    run = uuid.uuid4().hex[:6]
    users = []
    for n in range(count):
        user = get_user_model().objects.create_user(f"soak-{run}-{n}", password=None)
        credits.grant(user, 1_000_000, note="soak")
        session = SessionStore()
        session[SESSION_KEY] = str(user.pk)
        session[BACKEND_SESSION_KEY] = "django.contrib.auth.backends.ModelBackend"
        session[HASH_SESSION_KEY] = user.get_session_auth_hash()
        session.create()
        users.append((user.pk, session.session_key))
    return users


@dataclass
class Send:
    client_msg_id: str
    user_id: int
    fault: bool
    close_tab: bool
    sent_at: float
    outcome: str = "pending"  # a final status, "refused:<code>", or "timeout"
    message_id: int | None = None
    latency: float | None = None
    first_delta: float | None = None


def verify(sends: list[Send]) -> dict:
    from conversations.models import Message
    from conversations.services.billing import credits

    ids = [s.client_msg_id for s in sends]
    users = {str(m.client_msg_id): m for m in Message.objects.filter(client_msg_id__in=ids)}
    lost, mismatched, stored_refusals = [], [], []
    for send in sends:
        user_message = users.get(send.client_msg_id)
        if send.outcome.startswith("refused:"):
            if user_message is not None:
                stored_refusals.append(send.client_msg_id)
            continue
        if user_message is None:
            lost.append((send.client_msg_id, "no user message"))
            continue
        answer = (
            Message.objects.filter(
                conversation_id=user_message.conversation_id, role="assistant", id__gt=user_message.pk
            )
            .order_by("id")
            .first()
        )
        if answer is None or answer.status not in FINAL:
            lost.append((send.client_msg_id, answer.status if answer else "no answer"))
        elif send.outcome in FINAL and answer.status != send.outcome:
            mismatched.append((send.client_msg_id, send.outcome, answer.status))
    return {
        "lost": len(lost),
        "lost_examples": lost[:10],
        "status_mismatches": len(mismatched),
        "mismatch_examples": mismatched[:10],
        "refusals_that_stored_something": len(stored_refusals),
        "still_in_progress": Message.objects.in_progress().count(),
        "ledger_problems": [p.detail for p in credits.verify_ledger()][:10],
    }


# --- the load -------------------------------------------------------------------------------------------------------


class User:
    def __init__(self, args, stack: Stack, user_id: int, session_key: str, rng: random.Random):
        self.args, self.stack, self.user_id, self.session_key, self.rng = args, stack, user_id, session_key, rng
        self.socket = None
        self.conversation_id: int | None = None
        self.turns = 0
        self.sends: list[Send] = []

    async def connect(self):
        self.socket = await websockets.connect(
            self.stack.url.replace("http://", "ws://") + "/ws/chat/",
            additional_headers={"Cookie": f"sessionid={self.session_key}", "Origin": self.stack.url},
            open_timeout=30,
            max_size=None,
            ping_interval=None,  # like a browser: answer daphne's pings, send none (a late pong would close the socket)
        )

    async def recv(self, deadline: float) -> dict:
        return json.loads(await asyncio.wait_for(self.socket.recv(), max(0.01, deadline - time.monotonic())))

    async def run(self, until: float) -> None:
        await asyncio.sleep(self.rng.uniform(0, 5))  # spread the first sends
        while time.monotonic() < until:
            try:
                if self.socket is None:
                    await self.connect()
                await self.turn()
            except (OSError, TimeoutError, websockets.WebSocketException):
                self.socket = None
                await asyncio.sleep(1)
            await asyncio.sleep(self.rng.uniform(*_range(self.args.think)))
        if self.socket is not None:
            await self.socket.close()

    async def turn(self) -> None:
        tokens = int(self.rng.uniform(*_range(self.args.tokens)))
        fault = self.rng.random() < self.args.error_rate
        close_tab = not fault and self.rng.random() < self.args.close_rate
        content = f"soak {self.user_id} turn {self.turns} [[tokens:{tokens}]] [[rate:{self.args.rate}]]"
        if fault:
            content += " [[fault:error_midstream]]"
        send = Send(str(uuid.uuid4()), self.user_id, fault, close_tab, time.monotonic())
        self.sends.append(send)
        await self.socket.send(
            json.dumps(
                {"type": "send", "conversation_id": self.conversation_id, "content": content,
                 "client_msg_id": send.client_msg_id, "model": MODEL}
            )
        )  # fmt: skip
        deadline = send.sent_at + 120
        try:
            await self.follow(send, deadline)
        except (TimeoutError, OSError, websockets.WebSocketException) as exc:
            if send.outcome == "pending":  # what the client saw; the database check decides whether it was lost
                send.outcome = "timeout" if isinstance(exc, TimeoutError) else f"socket:{type(exc).__name__}"
            self.socket = None
            raise
        self.turns += 1
        if self.turns % self.args.turns == 0 or send.outcome != "complete":
            self.conversation_id = None  # a fresh conversation: never `busy` behind an answer still running

    async def follow(self, send: Send, deadline: float) -> None:
        user_message_id = None
        while send.outcome == "pending":
            frame = await self.recv(deadline)
            kind = frame["type"]
            if kind == "message":
                message = frame["message"]
                if message["role"] == "user" and message["client_msg_id"] == send.client_msg_id:
                    user_message_id = message["id"]
                    self.conversation_id = message["conversation_id"]
                elif message["role"] == "assistant" and user_message_id and message["id"] > user_message_id:
                    send.message_id = send.message_id or message["id"]
            elif kind == "error" and frame["message_id"] is None and send.message_id is None:
                send.outcome = f"refused:{frame['code']}"
            elif kind == "delta" and frame["message_id"] == send.message_id:
                if send.first_delta is None:
                    send.first_delta = time.monotonic() - send.sent_at
                    if send.close_tab:
                        await self.reopen_and_wait(send, deadline)
                        return
            elif kind == "done" and frame["message_id"] == send.message_id:
                send.outcome, send.latency = frame["status"], time.monotonic() - send.sent_at

    async def reopen_and_wait(self, send: Send, deadline: float) -> None:
        """The tab closes mid-answer; a new one opens, subscribes, and reads the answer to its end."""
        await self.socket.close()
        await asyncio.sleep(self.rng.uniform(0.2, 1.0))
        await self.connect()
        await self.socket.send(json.dumps({"type": "subscribe", "conversation_id": self.conversation_id}))
        while send.outcome == "pending":
            frame = await self.recv(deadline)
            if frame["type"] == "done" and frame["message_id"] == send.message_id:
                send.outcome = frame["status"]
            elif frame["type"] == "message" and frame["message"]["id"] == send.message_id:
                if frame["message"]["status"] in FINAL:  # it ended while no tab was open: the snapshot says how
                    send.outcome = frame["message"]["status"]


async def load(args, stack: Stack, users: list[tuple[int, str]], report: dict) -> list[Send]:
    rng = random.Random(args.seed)
    clients = [User(args, stack, uid, key, random.Random(rng.random())) for uid, key in users]
    until = time.monotonic() + args.duration

    async def sample_rss():
        await asyncio.sleep(min(args.warmup, args.duration / 2))
        report["rss_mb_after_warmup"] = round(rss_mb(stack.worker.pid), 1)

    sampler = asyncio.create_task(sample_rss())
    await asyncio.gather(*(client.run(until) for client in clients))
    await sampler
    return [send for client in clients for send in client.sends]


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    values = sorted(values)
    return round(values[min(len(values) - 1, int(q * len(values)))], 3)


def main(argv=None) -> int:
    args = parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="kimichat-soak-"))
    stack = Stack(args, workdir)
    setup_django(stack, migrate=not args.database_url)
    users = make_users(args.users)
    from django.db import connections

    connections.close_all()  # the load phase does not touch the database from here
    report: dict = {"users": args.users, "duration_s": args.duration, "workdir": str(workdir)}
    try:
        stack.start()
        time.sleep(2)
        report["rss_mb_idle"] = round(rss_mb(stack.worker.pid), 1)
        started = time.monotonic()
        sends = asyncio.run(load(args, stack, users, report))
        report["wall_s"] = round(time.monotonic() - started, 1)
        report["rss_mb_end"] = round(rss_mb(stack.worker.pid), 1)
        report["worker_alive"] = stack.worker.poll() is None
        report["load_average"] = os.getloadavg()
    finally:
        stack.stop()
    outcomes = Counter(s.outcome for s in sends)
    latencies = [s.latency for s in sends if s.latency is not None and not s.close_tab]
    first = [s.first_delta for s in sends if s.first_delta is not None]
    report.update(
        sends=len(sends),
        outcomes=dict(outcomes),
        injected_errors=sum(s.fault for s in sends),
        tabs_closed_mid_answer=sum(s.close_tab and s.first_delta is not None for s in sends),
        answers_completed=outcomes.get("complete", 0),
        latency_s={"p50": percentile(latencies, 0.5), "p95": percentile(latencies, 0.95),
                   "p99": percentile(latencies, 0.99), "max": round(max(latencies), 3) if latencies else None},
        first_delta_s={"p50": percentile(first, 0.5), "p99": percentile(first, 0.99)},
        mean_answer_s=round(statistics.mean(latencies), 3) if latencies else None,
    )  # fmt: skip
    report.update(verify(sends))
    warm = report.get("rss_mb_after_warmup") or report["rss_mb_idle"]
    report["rss_growth_after_warmup"] = round((report["rss_mb_end"] - warm) / warm, 4)
    ok = (
        report["lost"] == 0
        and report["status_mismatches"] == 0
        and report["refusals_that_stored_something"] == 0
        and not report["ledger_problems"]
        and report["still_in_progress"] == 0
        and report["worker_alive"]
        and report["rss_growth_after_warmup"] <= args.max_rss_growth
        and outcomes.get("timeout", 0) == 0
        and not any(outcome.startswith("socket:") for outcome in outcomes)
    )
    report["ok"] = ok
    text = json.dumps(report, indent=2, default=str)
    print(text)
    if args.json:
        Path(args.json).write_text(text)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
