"""``python manage.py offlinekimi``: serve the built-in offline Kimi-compatible API on loopback."""

from __future__ import annotations

import asyncio
import errno
import ipaddress

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from conversations.offline.profiles import PROFILES
from conversations.offline.server import OfflineKimiServer


class Command(BaseCommand):
    help = "Run the offline Kimi-compatible server (fake answers, fault injection) on a loopback address."

    def add_arguments(self, parser):
        parser.add_argument("--port", type=int, default=settings.OFFLINE_KIMI_PORT)
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--rate", type=float, default=30.0, help="tokens per second; 0 = as fast as possible")
        parser.add_argument(
            "--profile",
            choices=sorted(PROFILES),
            default="moonshot",
            help="the provider to play: its endpoints, models, field names, defaults and headers",
        )

    def handle(self, *args, host: str, port: int, rate: float, profile: str = "moonshot", **options):
        # The key is public and the answers are fake: never listen beyond this machine.
        if host != "localhost":
            try:
                loopback = ipaddress.ip_address(host).is_loopback
            except ValueError:
                loopback = False
            if not loopback:
                raise CommandError(f"--host must be a loopback address, got {host!r}")
        if rate < 0:
            raise CommandError("--rate must be 0 or more")
        server = OfflineKimiServer(
            host, port, api_key=settings.OFFLINE_KIMI_KEY, tokens_per_second=rate, profile=profile
        )

        async def serve():
            try:
                await server.start()
            except OSError as exc:
                if exc.errno != errno.EADDRINUSE:
                    raise
                # `make run` starts the app only after this line appears, so a busy port must stop it here with a
                # sentence an operator can act on, not a traceback (and not the app talking to a stranger's server).
                raise CommandError(
                    f"{host}:{port} is already in use by another program: stop it, or choose a free port with "
                    f"OFFLINE_KIMI_PORT (e.g. OFFLINE_KIMI_PORT={port + 1 if port < 65535 else 8765} make run)."
                ) from None
            self.stdout.write(f"Offline Kimi-compatible server on {server.base_url} ({rate:g} tokens/s, {profile})")
            self.stdout.flush()  # `make run` waits for this line through a file: do not leave it in a buffer
            await server.serve_forever()

        try:
            asyncio.run(serve())
        except KeyboardInterrupt:
            pass
