"""Benchmark mode of the offline server: every content piece carries the moment it was written to the socket.

The stamp is ``⟦<ns>⟧`` appended to the piece, where ``<ns>`` is ``time.monotonic_ns()``. CLOCK_MONOTONIC is one
clock for every process on a machine, so a client in another process subtracts the stamp from its own
``time.monotonic_ns()`` at receive time and gets the piece's latency from the upstream's send. Each request's arrival
is on the same clock (``RequestRecord.received_ns``), which times a ``send`` frame to the upstream request.

Used by ``bench/relay.py`` and ``bench/scale.py``; the stamps make the text longer but change nothing else.
"""

from __future__ import annotations

import re
import time

from conversations.offline.server import OfflineKimiServer

STAMP = re.compile(r"⟦(\d+)⟧")
STAMP_BYTES = re.compile("⟦(\\d+)⟧".encode())


def stamp_piece(piece: str, sent_at: float) -> str:
    """The ``stamp_piece`` hook: ``sent_at`` is wall-clock time; the stamp takes the monotonic clock instead."""
    return f"{piece}⟦{time.monotonic_ns()}⟧"


def stamps(text: str) -> list[int]:
    """The send times (monotonic ns) stamped into a text, in order."""
    return [int(ns) for ns in STAMP.findall(text)]


def benchmark_server(host: str = "127.0.0.1", port: int = 0, *, tokens_per_second: float = 20.0) -> OfflineKimiServer:
    return OfflineKimiServer(host, port, tokens_per_second=tokens_per_second, stamp_piece=stamp_piece)
