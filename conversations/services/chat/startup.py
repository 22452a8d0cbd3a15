"""Start a worker's background tasks with the worker, not with its first socket.

The registry's tasks (control channel, heartbeats, the reaper, checkpoints) used to start only when a websocket
connected, so after ``kill -9`` of the only worker an answer stayed ``streaming`` until someone opened the chat page
on the restarted one. ``WithBackgroundTasks`` wraps the ASGI application (``kimichat/asgi.py``) and starts them:

- under daphne, as soon as its Twisted reactor runs (daphne has no ASGI lifespan; it installs the reactor before it
  imports the application, so ``callWhenRunning`` is there to ask);
- under servers that speak the ASGI lifespan protocol (uvicorn, hypercorn), on ``lifespan.startup``;
- otherwise (and as a fallback if the start failed, e.g. Redis was down) on the next HTTP or websocket request.

The reaper's first round runs at once: it marks ``interrupted`` the answers older than HEARTBEAT_TTL whose heartbeat
is gone, then it repeats every REAP_INTERVAL.
"""

from __future__ import annotations

import asyncio
import logging
import sys

from django.conf import settings

from conversations.kimi.client import close_client
from conversations.services.chat.registry import get_registry

logger = logging.getLogger(__name__)


async def start_background_tasks() -> bool:
    try:
        await get_registry().ensure_started()
    except Exception:  # noqa: BLE001 - retried on the next request; a request must not fail for it
        logger.exception("could not start the worker's background tasks; retrying on the next request")
        return False
    return True


def _when_the_reactor_runs() -> None:
    reactor = sys.modules.get("twisted.internet.reactor")
    if reactor is None:
        return
    reactor.callWhenRunning(lambda: asyncio.ensure_future(start_background_tasks()))


class WithBackgroundTasks:
    """ASGI middleware: the worker's background tasks run from the start of the process (see the module doc)."""

    def __init__(self, app):
        self.app = app
        _when_the_reactor_runs()

    async def __call__(self, scope, receive, send):
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if get_registry().control_channel is None:
            await start_background_tasks()
        await self.app(scope, receive, send)

    async def _lifespan(self, receive, send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await start_background_tasks()
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                # What daphne's "before shutdown" trigger does (registry.install_shutdown_hook).
                await get_registry().shutdown(settings.KIMICHAT_SHUTDOWN_GRACE)
                await close_client()
                await send({"type": "lifespan.shutdown.complete"})
                return
