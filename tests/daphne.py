"""Real daphne worker processes for tests: the browser tests' server and the scale-out tests' workers.

Each worker shares the test database (file SQLite or PostgreSQL, committed writes: ``transactional_db``) and the
offline Kimi server; extra environment (REDIS_URL, HEARTBEAT_TTL, …) is passed per worker.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from django.conf import settings

ROOT = Path(__file__).resolve().parents[1]
STARTUP_TIMEOUT = 30.0
ASGI_APPLICATION = "kimichat.asgi:application"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def database_url() -> str:
    """The test database as a DATABASE_URL a daphne subprocess can open (SQLite: the per-run file)."""
    db = settings.DATABASES["default"]
    if db["ENGINE"].endswith("sqlite3"):
        name = str(db["NAME"])
        if name == ":memory:" or name.startswith("file:"):
            raise RuntimeError("tests with a real daphne need a file SQLite test database, not an in-memory one")
        return "sqlite:///" + str(Path(name).resolve())
    if db["ENGINE"].endswith("postgresql"):
        auth = quote(db.get("USER") or "", safe="")
        if db.get("PASSWORD"):
            auth += ":" + quote(db["PASSWORD"], safe="")
        host = db.get("HOST") or "127.0.0.1"
        port = f":{db['PORT']}" if db.get("PORT") else ""
        return f"postgres://{auth}{'@' if auth else ''}{host}{port}/{quote(db['NAME'], safe='')}"
    raise RuntimeError(f"no DATABASE_URL form for {db['ENGINE']}")


@dataclass
class LiveServer:
    url: str
    process: subprocess.Popen
    log_path: Path

    @property
    def ws_url(self) -> str:
        return self.url.replace("http://", "ws://", 1) + "/ws/chat/"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def signal(self, signum: int) -> None:
        self.process.send_signal(signum)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)


def _wait_until_up(server: LiveServer) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(f"daphne exited with {server.process.returncode}:\n{server.log()[-4000:]}")
        try:
            with urllib.request.urlopen(server.url + "/healthz", timeout=2) as response:  # noqa: S310
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.1)
    raise RuntimeError(f"daphne did not answer within {STARTUP_TIMEOUT}s:\n{server.log()[-4000:]}")


def start_daphne(
    offline_kimi, log_dir: Path, *, name: str = "daphne", extra_args: tuple[str, ...] | list[str] = (), **extra_env: str
) -> LiveServer:
    """Start one worker on a free port and wait until /healthz answers (``extra_args``: more daphne options)."""
    port = free_port()
    env = {
        **os.environ,
        "DATABASE_URL": database_url(),
        "KIMI_BASE_URL": offline_kimi.base_url,
        "KIMI_API_KEY": offline_kimi.api_key,
        "DEBUG": "true",
        "ALLOWED_HOSTS": "127.0.0.1,localhost",
        "DJANGO_SETTINGS_MODULE": "kimichat.settings",
        "PYTHONUNBUFFERED": "1",
        # As in-process tests (tests/fixtures/credits.py): 1 credit an answer, and no background balance reads.
        "USE_PUBLISHED_PRICES": "false",
        "DEFAULT_PRICE_PER_MILLION_PROMPT": "0",
        "DEFAULT_PRICE_PER_MILLION_COMPLETION": "0",
        "DEFAULT_PRICE_PER_MILLION_CACHED": "0",
        "PROVIDER_BALANCE_INTERVAL": "0",
        "AUTO_TITLES": "false",  # as in-process tests (tests/conftest.py); a test that wants titles turns them on
        **extra_env,
    }
    env.pop("KIMI_API_KEY_FILE", None)
    if not env.get("REDIS_URL"):
        env.pop("REDIS_URL", None)
    log_path = log_dir / f"{name}.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(  # noqa: S603
            [
                sys.executable,
                "-m",
                "kimichat.serve",
                "-b",
                "127.0.0.1",
                "-p",
                str(port),
                *extra_args,
                "kimichat.asgi:application",
            ],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    server = LiveServer(url=f"http://127.0.0.1:{port}", process=process, log_path=log_path)
    try:
        _wait_until_up(server)
    except Exception:
        server.stop()
        raise
    return server


class Socket:
    """A real websocket client on a worker (the browser's side of the protocol), with helpers to read frames."""

    def __init__(self, connection):
        self.connection = connection

    async def send(self, **frame):
        await self.connection.send(json.dumps(frame))

    async def recv(self, timeout: float = 20) -> dict:
        return json.loads(await asyncio.wait_for(self.connection.recv(), timeout))

    async def until(self, predicate, timeout: float = 30) -> tuple[dict, list[dict]]:
        """Frames up to and including the first one for which ``predicate`` holds."""
        seen = []
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            frame = await self.recv(max(0.05, deadline - asyncio.get_running_loop().time()))
            seen.append(frame)
            if predicate(frame):
                return frame, seen


async def open_socket(server: LiveServer, user, socket_class: type[Socket] = Socket) -> Socket:
    """A logged-in socket (a real session cookie, an allowed origin) on ``server``."""
    import websockets
    from asgiref.sync import sync_to_async

    from tests.fixtures.ws import _session_key

    key = await sync_to_async(_session_key)(user)
    connection = await websockets.connect(
        server.ws_url, additional_headers={"Cookie": f"sessionid={key}", "Origin": server.url}, open_timeout=10
    )
    return socket_class(connection)
