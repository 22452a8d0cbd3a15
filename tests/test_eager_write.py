"""``kimichat.eager_write``: daphne's accepted connections send a write at once when nothing is buffered.

Real TCP sockets on loopback and Twisted's own ``tcp.Server``; the reactor is a recorder of which descriptors asked to
be told of writability (the one seam: under daphne that is the asyncio loop's ``add_writer``), and the tests play the
loop's part by calling ``doWrite`` when a descriptor is registered and its socket can take more.
"""

from __future__ import annotations

import select
import socket
import struct
import time

import pytest
from twisted.internet import tcp
from twisted.internet.protocol import Protocol

from kimichat import eager_write


class RecordingReactor:
    def __init__(self):
        self.writers: set = set()
        self.registrations = 0

    def addWriter(self, descriptor):  # noqa: N802 (Twisted's names)
        self.registrations += 1
        self.writers.add(descriptor)

    def removeWriter(self, descriptor):  # noqa: N802
        self.writers.discard(descriptor)

    def addReader(self, descriptor):  # noqa: N802
        pass

    def removeReader(self, descriptor):  # noqa: N802
        pass


@pytest.fixture
def installed(monkeypatch):
    # Restored after the test: the suite's own process must not keep the patch (daphne runs in subprocesses).
    monkeypatch.setattr(tcp.Server, "write", tcp.Server.write)
    monkeypatch.setattr(tcp.Server, "writeSequence", tcp.Server.writeSequence)
    monkeypatch.setattr(tcp.Server, "__init__", tcp.Server.__init__)
    eager_write.install()
    assert eager_write.installed()


def accepted_pair(sndbuf: int | None = None):
    """A Twisted server-side connection over a real loopback TCP connection, and the peer's socket."""
    listener = socket.create_server(("127.0.0.1", 0))
    peer = socket.create_connection(listener.getsockname())
    sock, client = listener.accept()
    listener.close()
    if sndbuf:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, sndbuf)
    sock.setblocking(False)
    peer.settimeout(5)
    reactor = RecordingReactor()
    connection = tcp.Server(sock, Protocol(), client, None, 1, reactor)
    return connection, peer, reactor


def receive_exactly(peer: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = peer.recv(size - len(data))
        assert chunk, "the connection closed early"
        data += chunk
    return data


def test_a_write_to_an_idle_connection_is_sent_without_the_reactor(installed):
    connection, peer, reactor = accepted_pair()
    connection.write(b"frame one")
    connection.write(b"frame two")
    assert reactor.registrations == 0  # no add_writer, no turn of the loop
    assert receive_exactly(peer, 18) == b"frame oneframe two"
    peer.close()
    connection.socket.close()


def test_a_sequence_to_an_idle_connection_is_sent_as_one_write(installed):
    """twisted.web writes a chunked body's every chunk as a sequence (size line, data, CRLF): the user API's stream."""
    connection, peer, reactor = accepted_pair()
    connection.writeSequence([b"5\r\n", b"hello", b"\r\n"])
    assert reactor.registrations == 0
    assert receive_exactly(peer, 10) == b"5\r\nhello\r\n"
    connection.loseConnection()  # closing: a sequence goes through Twisted's buffer, behind anything there
    connection.writeSequence([b"0\r\n", b"\r\n"])
    assert connection._tempDataLen == 5
    peer.close()
    connection.socket.close()


def test_without_it_twisted_buffers_until_the_loop_turns():
    """What install() changes: the same write through Twisted's own path waits for a doWrite."""
    connection, peer, reactor = accepted_pair()
    connection.write(b"frame one")
    assert reactor.registrations == 1 and connection in reactor.writers
    peer.setblocking(False)
    with pytest.raises(BlockingIOError):
        peer.recv(100)
    peer.close()
    connection.socket.close()


def test_what_the_socket_does_not_take_is_buffered_and_the_order_kept(installed):
    connection, peer, reactor = accepted_pair(sndbuf=4096)
    big = bytes(range(256)) * 16384  # 4 MiB: more than the socket takes at once
    connection.write(big)
    assert reactor.registrations == 1  # the rest is buffered: the writer is registered, once
    connection.write(b"<tail>")  # something is buffered: this goes behind it, not straight to the socket
    connection.writeSequence([b"<se", b"quence>"])  # and so does a sequence
    assert connection._tempDataLen > 0
    registrations = reactor.registrations
    received = bytearray()
    expected = big + b"<tail><sequence>"
    deadline = time.monotonic() + 30
    while len(received) < len(expected) and time.monotonic() < deadline:
        # The loop's part: a registered descriptor whose socket can take more is written.
        if connection in reactor.writers and select.select([], [connection.socket], [], 0)[1]:
            assert connection.doWrite() is None
        if select.select([peer], [], [], 0.01)[0]:
            received += peer.recv(1 << 20)
    assert bytes(received) == expected
    assert connection not in reactor.writers  # all sent: unregistered, as Twisted does
    connection.write(b"again")  # idle once more: straight out
    assert reactor.registrations == registrations
    assert receive_exactly(peer, 5) == b"again"
    peer.close()
    connection.socket.close()


def test_an_error_from_the_socket_is_left_to_twisted(installed):
    connection, peer, reactor = accepted_pair()
    peer.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    peer.close()  # a reset
    time.sleep(0.05)
    connection.write(b"into a reset connection")
    assert connection in reactor.writers  # buffered: the error is met again by doWrite, which reports it
    assert isinstance(connection.doWrite(), Exception)
    connection.socket.close()


def test_a_closing_connection_writes_through_twisted(installed):
    connection, peer, reactor = accepted_pair()
    connection.loseConnection()
    connection.write(b"last words")
    assert connection._tempDataLen == len(b"last words")  # flushed by doWrite before the close, as before
    peer.close()
    connection.socket.close()


def test_accepted_connections_get_tcp_nodelay(installed):
    connection, peer, _reactor = accepted_pair()
    assert connection.socket.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
    peer.close()
    connection.socket.close()


def test_install_is_idempotent(installed):
    eager_write.install()
    connection, peer, reactor = accepted_pair()
    connection.write(b"x")
    assert receive_exactly(peer, 1) == b"x" and reactor.registrations == 0
    peer.close()
    connection.socket.close()
