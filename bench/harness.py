"""What the relay benchmarks share: a scratch install, the stamping offline server, daphne workers, client processes.

Everything runs on 127.0.0.1. The install lives in a scratch directory (its own SQLite file or a PostgreSQL database
named by the caller, its own secret key), so a benchmark never touches ``var/kimichat.sqlite3``. Every process it
starts is stopped when it ends (``Bench`` is a context manager).
"""

from __future__ import annotations

import gc
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

CLIENT = Path(__file__).resolve().parent / "wsclient.py"
STAMP = re.compile(r"⟦(\d+)⟧")
MODEL = "kimi-k2-turbo-preview"  # answers without reasoning: every piece is a stamped content piece
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE_KB = os.sysconf("SC_PAGE_SIZE") // 1024


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process, from /proc/<pid>/stat."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


SERVICE_NAMES = ("postgres", "redis-server")


def services_cpu_seconds() -> float:
    """CPU seconds of every PostgreSQL and Redis process on the machine (the shared services of the scale-out setup).
    A backend that exits between two readings takes its CPU with it: the workers keep their connections (pooled), so
    the difference over a level is the services' CPU for it, a lower bound."""
    total = 0.0
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/comm") as f:
                name = f.read().strip()
            if name in SERVICE_NAMES or name.startswith("postgres"):
                total += cpu_seconds(int(entry.name))
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue
    return total


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


def machine() -> dict:
    model = ""
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    with open("/proc/meminfo") as f:
        total_kb = int(f.readline().split()[1])
    return {"cpus": os.cpu_count(), "cpu_model": model, "memory_gb": round(total_kb / 1024 / 1024, 1)}


def load() -> str:
    return "{:.2f} {:.2f} {:.2f}".format(*os.getloadavg())


def pg_available(url: str) -> str | None:
    """None when the PostgreSQL server at ``url`` answers, else why not."""
    import psycopg

    try:
        with psycopg.connect(_maintenance_url(url), connect_timeout=3):
            return None
    except Exception as exc:  # noqa: BLE001 - any failure means "not reachable"
        return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


def _maintenance_url(url: str) -> str:
    return url.rsplit("/", 1)[0].replace("postgres://", "postgresql://", 1) + "/postgres"


def recreate_pg_database(url: str) -> None:
    import psycopg

    name = url.rsplit("/", 1)[1]
    with psycopg.connect(_maintenance_url(url), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')


def drop_pg_database(url: str) -> None:
    import psycopg

    name = url.rsplit("/", 1)[1]
    with psycopg.connect(_maintenance_url(url), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def setup_django(env: dict[str, str]) -> None:
    """Point this process's Django at the scratch install, then set it up and migrate."""
    for name in ("DATABASE_URL", "REDIS_URL", "KIMI_API_KEY_FILE", "SECRET_KEY_FILE"):
        os.environ.pop(name, None)
    os.environ.update(env)
    import django
    from django.core.management import call_command

    django.setup()
    call_command("migrate", verbosity=0, interactive=False)


def _profiled(index: int) -> list[str]:
    """``BENCH_CPROFILE=FILE``: each worker runs under cProfile (its event loop's thread), written to FILE (FILE.N for
    the N+1th worker) when it stops: ``python -m pstats FILE`` reads it."""
    path = os.environ.get("BENCH_CPROFILE")
    if not path:
        return []
    return ["-m", "cProfile", "-o", path if index == 0 else f"{path}.{index}"]


@dataclass
class Worker:
    url: str
    process: subprocess.Popen
    log_path: Path

    @property
    def ws_url(self) -> str:
        return self.url.replace("http://", "ws://", 1) + "/ws/chat/"

    @property
    def pid(self) -> int:
        return self.process.pid

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)


@dataclass
class LevelResult:
    label: str
    streams: int
    rate: float
    tokens: int
    latencies_ms: list[float] = field(default_factory=list)
    first_ms: list[float] = field(default_factory=list)  # each stream's first piece
    send_to_upstream_ms: list[float] = field(default_factory=list)
    send_to_first_ms: list[float] = field(default_factory=list)  # the client's send to its first piece received
    frames: int = 0
    pieces: int = 0
    pieces_expected: int = 0
    lost: int = 0
    reordered: int = 0
    text_mismatches: int = 0
    resyncs: int = 0  # snapshots the server sent after a socket missed a delta (channel layer full or expired)
    failed_streams: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    # Each stream's first and last piece received (ns): how many answers were streaming at the same moment. A level
    # of N streams whose sends queue holds fewer than N at once (the first ones end before the last ones start).
    spans_ns: list[tuple[int, int]] = field(default_factory=list)
    seconds: float = 0.0
    server_cpu: float = 0.0
    upstream_cpu: float = 0.0
    client_cpu: float = 0.0
    services_cpu: float | None = None  # PostgreSQL + Redis, when the level ran on them
    rss_before_mb: float = 0.0
    rss_peak_mb: float = 0.0
    load: str = ""
    upstream_requests: int = 0  # chat requests the offline server received in the level
    upstream_connections: int = 0  # the connections they came on
    upstream_new_connections: int = 0  # of which opened in this level (the others: kept by the worker's pool)

    def p(self, q: float) -> float:
        return percentile(self.latencies_ms, q)

    def peak_live(self) -> int:
        """The most answers streaming at the same moment (between their first and last piece received)."""
        events = sorted([(first, 1) for first, _ in self.spans_ns] + [(last, -1) for _, last in self.spans_ns])
        live = peak = 0
        for _, step in events:
            live += step
            peak = max(peak, live)
        return peak

    def row(self) -> dict:
        span = max(self.seconds, 1e-9)
        per_stream_kb = (self.rss_peak_mb - self.rss_before_mb) * 1024 / self.streams if self.streams else 0
        return {
            "run": self.label,
            "streams": self.streams,
            "peak live": self.peak_live() if self.spans_ns else "-",
            "tok/s each": "max" if self.rate == 0 else f"{self.rate:g}",
            "p50 ms": f"{self.p(50):.1f}",
            "p95 ms": f"{self.p(95):.1f}",
            "p99 ms": f"{self.p(99):.1f}",
            "max ms": f"{self.p(100):.1f}",
            "deltas/s": f"{self.frames / span:.0f}",
            "pieces/s": f"{self.pieces / span:.0f}",
            "lost": self.lost,
            "reordered": self.reordered,
            "bad text": self.text_mismatches,
            "resyncs": self.resyncs,
            "failed": self.failed_streams,
            "send→upstream p50/p99 ms": (
                f"{percentile(self.send_to_upstream_ms, 50):.1f}/{percentile(self.send_to_upstream_ms, 99):.1f}"
                if self.send_to_upstream_ms
                else "-"
            ),
            "server CPU s (%)": f"{self.server_cpu:.1f} ({100 * self.server_cpu / span:.0f}%)"
            if self.server_cpu
            else "-",
            "upstream CPU s": f"{self.upstream_cpu:.1f}",
            "client CPU s": f"{self.client_cpu:.1f}",
            "PG+Redis CPU s": f"{self.services_cpu:.1f}" if self.services_cpu is not None else "-",
            "RSS before→peak MB": f"{self.rss_before_mb:.0f}→{self.rss_peak_mb:.0f}" if self.rss_peak_mb else "-",
            "KB/stream": f"{per_stream_kb:.0f}" if self.rss_peak_mb else "-",
            "load": self.load,
        }


def print_table(rows: list[dict], columns: list[str] | None = None) -> None:
    if not rows:
        return
    columns = columns or list(rows[0])
    widths = {c: max(len(c), *(len(str(r.get(c, ""))) for r in rows)) for c in columns}
    print("| " + " | ".join(c.ljust(widths[c]) for c in columns) + " |")
    print("|" + "|".join("-" * (widths[c] + 2) for c in columns) + "|")
    for r in rows:
        print("| " + " | ".join(str(r.get(c, "")).ljust(widths[c]) for c in columns) + " |")
    sys.stdout.flush()


class Bench:
    """A scratch install with the stamping offline server (a thread of this process) and daphne workers."""

    def __init__(self, *, database_url: str | None = None, redis_url: str | None = None, extra_env=None):
        self.scratch = Path(tempfile.mkdtemp(prefix="kimichat-bench-"))
        self.database_url = database_url or f"sqlite:///{self.scratch / 'bench.sqlite3'}"
        self.redis_url = redis_url
        self.extra_env = dict(extra_env or {})
        self.workers: list[Worker] = []
        self.offline = None
        self.connections_seen = 0  # the offline server numbers its connections: the highest seen so far
        self.sessions: list[str] = []
        self.api_keys: list[str] = []
        self._level = 0

    def __enter__(self) -> Bench:
        from conversations.offline.benchmark import benchmark_server

        self.offline = benchmark_server(tokens_per_second=20).run_in_thread()
        self.env = {
            "DJANGO_SETTINGS_MODULE": "kimichat.settings",
            "KIMICHAT_VAR_DIR": str(self.scratch),
            "DATABASE_URL": self.database_url,
            "SECRET_KEY": secrets.token_urlsafe(50),
            "DEBUG": "false",  # as in production: no query log growing in memory, JSON logs
            "ALLOWED_HOSTS": "127.0.0.1,localhost",
            "SECURE_SSL_REDIRECT": "false",
            "LOG_LEVEL": "WARNING",
            "KIMI_BASE_URL": self.offline.base_url,
            "KIMI_API_KEY": self.offline.api_key,
            # One user per stream, so the per-user cap and rate limits keep their defaults; enough credits to never
            # refuse a send in a long run.
            "SIGNUP_CREDITS": "100000",
            "PYTHONUNBUFFERED": "1",
            "SHUTDOWN_GRACE": "2",  # the bench stops daphne when it is done with it: no answers worth waiting for
            # The relay is what is measured: a chat's title request would be a second upstream stream per chat, read
            # by the stamping server as one more (and wrong) answer. Titles cost one small request after the first
            # answer, off its path (docs/api.md "Personalisation").
            "AUTO_TITLES": "false",
            **({"REDIS_URL": self.redis_url} if self.redis_url else {}),
            **self.extra_env,
        }
        if self.redis_url:
            import redis

            redis.Redis.from_url(self.redis_url).flushdb()
        setup_django(self.env)
        return self

    def __exit__(self, *exc) -> None:
        for worker in self.workers:
            worker.stop()
        if self.offline is not None:
            self.offline.stop()
        from django.db import connections

        connections.close_all()
        shutil.rmtree(self.scratch, ignore_errors=True)

    def ensure_users(self, count: int) -> None:
        """One user (and one logged-in session) per concurrent stream."""
        from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY, get_user_model
        from django.contrib.sessions.backends.db import SessionStore

        user_model = get_user_model()
        while len(self.sessions) < count:
            user = user_model.objects.create_user(f"bench{len(self.sessions)}", password=None)
            session = SessionStore()
            session[SESSION_KEY] = str(user.pk)
            session[BACKEND_SESSION_KEY] = "django.contrib.auth.backends.ModelBackend"
            session[HASH_SESSION_KEY] = user.get_session_auth_hash()
            session.create()
            self.sessions.append(session.session_key)

    def ensure_api_keys(self, count: int) -> None:
        """One personal API key (for /v1/) per concurrent stream, each of its own user."""
        from django.contrib.auth import get_user_model

        from conversations.services.apikeys import keys

        self.ensure_users(count)
        user_model = get_user_model()
        while len(self.api_keys) < count:
            user = user_model.objects.get(username=f"bench{len(self.api_keys)}")
            self.api_keys.append(keys.create(user, name="bench").secret)

    def start_workers(self, count: int) -> None:
        for worker in self.workers:
            worker.stop()
        self.workers = []
        env = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "REDIS_URL", "KIMI_API_KEY_FILE"}}
        env.update(self.env)
        for index in range(count):
            port = free_port()
            log_path = self.scratch / f"daphne-{index}.log"
            with open(log_path, "wb") as log:
                process = subprocess.Popen(  # noqa: S603
                    [sys.executable, *_profiled(index), "-m", "kimichat.serve", "-b", "127.0.0.1", "-p", str(port)]
                    + ["kimichat.asgi:application"],
                    cwd=ROOT,
                    env=env,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            self.workers.append(Worker(f"http://127.0.0.1:{port}", process, log_path))
        for worker in self.workers:
            _wait_until_up(worker)

    def log_errors(self, limit: int = 10) -> list[str]:
        """The last error lines the workers logged (their logs go away with the scratch directory)."""
        lines = []
        for worker in self.workers:
            text = worker.log_path.read_text(errors="replace") if worker.log_path.exists() else ""
            for line in text.splitlines():
                if "ERROR" in line or "Error" in line:
                    # JSON log lines carry the traceback in one field: keep its last line, the exception itself.
                    last = line.rstrip('"}').split("\\n")[-1].strip()
                    lines.append(f"{line[:120]} … {last[:200]}")
        return lines[-limit:]

    def idle_rss_mb(self) -> list[float]:
        return [rss_mb(w.pid) for w in self.workers]

    # --- one level ---------------------------------------------------------------------------------------------

    def run_level(
        self,
        streams: int,
        *,
        rate: float,
        tokens: int,
        ramp: float,
        clients: int,
        floor: bool = False,
        api: bool = False,
        label: str = "",
        first_token_s: float = 0.0,
    ) -> LevelResult:
        """``streams`` answers started over ``ramp`` seconds, each ``tokens`` pieces at ``rate`` pieces/s: through the
        websocket, through ``POST /v1/chat/completions`` (``api``), or read straight from the upstream (``floor``).
        ``first_token_s``: the upstream waits that long before each answer's first piece, as a real provider does."""
        self._level += 1
        mode = "floor" if floor else "api" if api else "relay"
        if api:
            self.ensure_api_keys(streams)
        elif not floor:
            self.ensure_users(streams)
        prefix = f"L{self._level}{mode[0]}"
        urls = [self.workers[i % len(self.workers)].url for i in range(streams)] if self.workers else []
        stream_specs = [
            {
                "marker": f"{prefix}-{i}",
                "start": ramp * i / streams,
                **(
                    {}
                    if floor
                    else {"key": self.api_keys[i], "url": urls[i] + "/v1/chat/completions"}
                    if api
                    else {"key": self.sessions[i], "url": self.workers[i % len(self.workers)].ws_url}
                ),
            }
            for i in range(streams)
        ]
        content = f"Benchmark stream {{marker}} says hello. [[tokens:{tokens}]] [[rate:{rate:g}]]"
        if first_token_s:
            content += f" [[fault:slow_first_token:{first_token_s:g}]]"
        duration = ramp + (tokens / rate if rate else 10)
        job = {
            "mode": mode,
            "model": MODEL,
            "content": content,
            "timeout": duration + 60,
            "url": self.workers[0].ws_url if self.workers else "",
            "upstream": ["127.0.0.1", self.offline.server.port],
            "api_key": self.offline.api_key,
        }
        self.offline.log.clear()
        # The upstream stand-in runs in this process: its garbage collector must not stall it in the middle of a
        # level (full collections of this process took 19-113 ms and grew run by run, delaying the floor's reads
        # and the relay's alike: a floor burst of 50 read in 130-180 ms instead of 15-30). Collected between levels.
        gc.collect()
        gc.freeze()
        gc.disable()
        clients = max(1, min(clients, streams))
        chunks = [stream_specs[i::clients] for i in range(clients)]
        procs = [
            subprocess.Popen(  # noqa: S603
                [sys.executable, str(CLIENT)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
                cwd=ROOT,
            )
            for _ in chunks
        ]
        outputs: list[str | None] = [None] * len(procs)
        try:
            for proc, chunk in zip(procs, chunks, strict=True):
                proc.stdin.write(json.dumps({**job, "streams": chunk}) + "\n")
                proc.stdin.flush()
            for proc in procs:
                line = proc.stdout.readline().strip()
                if line != "ready":
                    raise RuntimeError(f"a benchmark client failed to start (said {line!r})")
            result = LevelResult(label or mode, streams, rate, tokens, load=load())
            pids = [w.pid for w in self.workers] if not floor else []
            cpu_before = sum(cpu_seconds(p) for p in pids)
            shared = self.database_url.startswith("postgres") or self.redis_url is not None
            services_before = services_cpu_seconds() if shared else 0.0
            upstream_before = time.process_time()
            result.rss_before_mb = sum(rss_mb(p) for p in pids)
            t0 = time.monotonic_ns() + 200_000_000
            readers = []
            for index, proc in enumerate(procs):
                proc.stdin.write(f"go {t0}\n")
                proc.stdin.flush()
                reader = threading.Thread(target=_read_rest, args=(proc, outputs, index), daemon=True)
                reader.start()
                readers.append(reader)
            peak = result.rss_before_mb
            while any(r.is_alive() for r in readers):
                if pids:
                    peak = max(peak, sum(rss_mb(p) for p in pids))
                time.sleep(0.2)
            result.seconds = (time.monotonic_ns() - t0) / 1e9
            result.server_cpu = sum(cpu_seconds(p) for p in pids) - cpu_before
            result.upstream_cpu = time.process_time() - upstream_before
            if shared:
                result.services_cpu = services_cpu_seconds() - services_before
            result.rss_peak_mb = peak if pids else 0.0
        finally:
            gc.enable()
            for proc in procs:
                if proc.poll() is None:
                    proc.kill()
                proc.wait(timeout=10)
        self._collect(result, outputs, tokens, t0)
        return result

    def _collect(self, result: LevelResult, outputs: list[str | None], tokens: int, t0: int) -> None:
        records = {}
        chats = self.offline.log.chat_requests
        result.upstream_requests = len(chats)
        numbers = {record.connection for record in chats}
        result.upstream_connections = len(numbers)
        result.upstream_new_connections = sum(1 for number in numbers if number > self.connections_seen)
        self.connections_seen = max(numbers | {self.connections_seen})
        for record in chats:
            text = (record.body or {}).get("messages", [{}])[-1].get("content", "")
            marker = text.split("Benchmark stream ", 1)[-1].split(" ", 1)[0]
            records[marker] = record
        import hashlib

        last_ns = t0
        for output in outputs:
            if not output:
                result.failed_streams += 1
                continue
            data = json.loads(output)
            result.client_cpu += data["cpu_seconds"]
            for stream in data["results"]:
                result.pieces_expected += tokens
                status = stream.get("status")
                if status != "complete":
                    result.failed_streams += 1
                    result.errors[str(status)] = result.errors.get(str(status), 0) + 1
                for code in stream.get("errors", []):
                    result.errors[code] = result.errors.get(code, 0) + 1
                result.latencies_ms += [ns / 1e6 for ns in stream.get("latencies_ns", [])]
                if stream.get("latencies_ns"):
                    result.first_ms.append(stream["latencies_ns"][0] / 1e6)
                result.frames += stream.get("frames", 0)
                result.pieces += stream.get("pieces", 0)
                last_ns = max(last_ns, stream.get("last_ns") or 0)
                record = records.get(stream["marker"])
                if stream.get("send_ns") and stream.get("first_ns"):
                    result.send_to_first_ms.append((stream["first_ns"] - stream["send_ns"]) / 1e6)
                if stream.get("first_ns") and stream.get("last_ns"):
                    result.spans_ns.append((stream["first_ns"], stream["last_ns"]))
                if record is not None and stream.get("send_ns"):
                    result.send_to_upstream_ms.append((record.received_ns - stream["send_ns"]) / 1e6)
                if "text_sha256" in stream and status == "complete":
                    result.reordered += stream["stamps_out_of_order"]
                    result.resyncs += stream["snapshots"]
                    sent = record.sent_text if record is not None else ""
                    if hashlib.sha256(sent.encode()).hexdigest() != stream["text_sha256"] or not stream.get(
                        "final_matches"
                    ):
                        result.text_mismatches += 1
                if record is not None and status == "complete":
                    # Pieces the upstream wrote that never reached the client, in streams that completed; a stream
                    # that failed (refused, or no upstream request) counts under "failed" instead.
                    result.lost += max(0, len(STAMP.findall(record.sent_text)) - stream.get("pieces", 0))
        if last_ns > t0:
            result.seconds = (last_ns - t0) / 1e9


def _read_rest(proc: subprocess.Popen, outputs: list, index: int) -> None:
    outputs[index] = proc.stdout.read().strip() or None


def _wait_until_up(worker: Worker, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if worker.process.poll() is not None:
            raise RuntimeError(
                f"daphne exited with {worker.process.returncode}:\n{worker.log_path.read_text()[-3000:]}"
            )
        try:
            with urllib.request.urlopen(worker.url + "/healthz", timeout=2) as response:  # noqa: S310 - loopback
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.1)
    raise RuntimeError(f"daphne did not answer within {timeout}s")
