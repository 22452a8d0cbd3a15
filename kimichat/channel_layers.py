"""The in-memory channel layer (one process, no Redis), with its expiry sweep run at most once a second.

channels' ``InMemoryChannelLayer`` sweeps every queue and every group membership for expired entries on each
``receive`` and ``group_send``. Every socket's consumer calls ``receive`` when it starts, and again after each
message the layer brings it, so with N sockets open each call costs O(N) and N sockets connecting cost O(N²): 1.1 ms
a call at 1,000 sockets (3,000 group memberships), ~7% of a worker's busy time while 1,000 answers streamed
(``bench/profile.py --streams 1000``; docs/performance.md, issue 23, session 14).

What the sweep removes is 60 s old (a message nobody read) or a day old (a group membership): swept once a second,
such an entry lives at most a second longer, and nothing else changes. channels-redis (``REDIS_URL``) expires its
entries in Redis and is not concerned.
"""

from __future__ import annotations

import time

from channels.layers import InMemoryChannelLayer as ChannelsInMemoryLayer


class InMemoryChannelLayer(ChannelsInMemoryLayer):
    SWEEP_EVERY = 1.0  # seconds between two sweeps

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._last_sweep = float("-inf")

    def _clean_expired(self) -> None:
        now = time.monotonic()
        if now - self._last_sweep < self.SWEEP_EVERY:
            return
        self._last_sweep = now
        super()._clean_expired()
