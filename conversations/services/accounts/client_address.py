"""The client's address as the last trusted proxy saw it.

Every proxy in front of daphne (nginx's ``$proxy_add_x_forwarded_for``) appends the address it saw to
``X-Forwarded-For``, after whatever the client wrote there. So only the last ``TRUSTED_PROXY_HOPS`` entries were
written by proxies we run; the entry the outermost of them appended is the client. Earlier entries (and daphne's
``--proxy-headers``, which takes the first) are the client's own words, and would let one client be anyone.
"""

from __future__ import annotations

import ipaddress

from django.conf import settings


def forwarded_client(peer: str, forwarded_for: str, hops: int) -> str:
    """The client address: ``peer`` (the TCP peer) with no trusted proxy, else the entry the outermost trusted proxy
    appended to ``forwarded_for``. An entry that is not an IP address means a misconfigured chain: the peer then."""
    entries = [entry.strip() for entry in (forwarded_for or "").split(",") if entry.strip()]
    if hops <= 0 or not entries:
        return peer
    # Fewer entries than hops: the chain is shorter than configured; the oldest entry is still a proxy's.
    candidate = entries[-min(hops, len(entries))]
    try:
        return str(ipaddress.ip_address(candidate))
    except ValueError:
        return peer


def request_client_address(request) -> str:
    """The client address of a Django request ("" without a request)."""
    if request is None:
        return ""
    meta = request.META
    forwarded_for = meta.get("HTTP_X_FORWARDED_FOR", "")
    return forwarded_client(meta.get("REMOTE_ADDR", ""), forwarded_for, settings.TRUSTED_PROXY_HOPS)
