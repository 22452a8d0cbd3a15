"""A write to an idle accepted TCP connection goes to its socket at once, as asyncio's own transports do.

Twisted's ``FileDescriptor.write`` always buffers: it registers the socket for writability with the reactor
(``addWriter``: under daphne's asyncio reactor an ``epoll_ctl`` and a new handle), and the next turn of the loop sends
the buffer and unregisters it (``removeWriter``: another ``epoll_ctl``). A relayed answer writes one websocket frame
per socket per turn, so every frame paid both registrations and a trip through the loop: ~17% of daphne's samples at
1,000 streams (docs/performance.md, issue 23, session 10). asyncio's transports (and uvicorn's, on them) try
``send()`` first and register only what the kernel did not take.

``install()`` gives Twisted's server-side connections (``tcp.Server``, what daphne accepts) that behaviour:

- nothing buffered, connected, not closing: ``writeSomeData`` (one ``send``; a ``writeSequence``, as twisted.web
  writes headers and each chunk of a chunked body, joined first); only what it did not take is buffered,
  through Twisted's own ``write``, which registers the writer as before;
- anything already buffered (a full socket, an earlier partial send), or an error from the socket: Twisted's own
  ``write``, so the order of the bytes is kept and ``doWrite`` meets the error and closes the connection as it would
  have.

Accepted connections also get ``TCP_NODELAY`` at accept (asyncio's default): with every write sent at once, a small
write that follows another in the same turn must not wait for the first one's acknowledgement. twisted.web's HTTP
channel (daphne's, websockets start there) and autobahn already set it in ``connectionMade``; eager writes rely on
it, so it is set here too, whatever protocol the connection runs.
"""

from __future__ import annotations

from twisted.internet import abstract, tcp

_buffered_write = abstract.FileDescriptor.write
_buffered_write_sequence = abstract.FileDescriptor.writeSequence
_server_init = tcp.Server.__init__


def _idle(self: tcp.Server) -> bool:
    return (
        self.connected
        and not self.disconnecting
        and not self._writeDisconnected
        and not self._writeDisconnecting
        and not self._tempDataLen
        and self.offset == len(self.dataBuffer)
    )


def _send_now(self: tcp.Server, data: bytes) -> None:
    """One ``send`` on an idle connection; what it did not take (all of it on a socket error) goes to the buffer."""
    sent = self.writeSomeData(data)
    if isinstance(sent, int):
        if sent == len(data):
            return
        data = data[sent:]
    _buffered_write(self, data)


def _write(self: tcp.Server, data: bytes) -> None:
    if data and type(data) is bytes and _idle(self):
        _send_now(self, data)
    else:
        _buffered_write(self, data)


def _write_sequence(self: tcp.Server, iovec) -> None:
    """twisted.web writes its headers and every chunk of a chunked body (the user API's stream) as a sequence."""
    if iovec and _idle(self) and all(type(part) is bytes for part in iovec):
        _send_now(self, b"".join(iovec))
    else:
        _buffered_write_sequence(self, iovec)


def _init(self: tcp.Server, sock, *args, **kwargs) -> None:
    _server_init(self, sock, *args, **kwargs)
    try:
        self.setTcpNoDelay(True)
    except OSError:  # not a TCP socket after all (a test's Unix socket): nothing to set
        pass


def install() -> None:
    """Patch ``twisted.internet.tcp.Server`` (idempotent); client connections are left as they are."""
    tcp.Server.write = _write
    tcp.Server.writeSequence = _write_sequence
    tcp.Server.__init__ = _init


def installed() -> bool:
    return tcp.Server.write is _write
