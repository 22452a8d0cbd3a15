"""``python -m kimichat.serve``: daphne's command line without the TLS stack (kimichat/serve.py). Every real daphne
of the suite (tests/daphne.py: the browser and scale-out tests) starts through it, so it serves the whole app; this
checks what it leaves out, in a fresh interpreter (this one has imported Twisted already)."""

from __future__ import annotations

import subprocess
import sys

from tests.daphne import ROOT, start_daphne

PROBE = """
import sys
from kimichat import serve
try:
    serve.main(["--help"])  # daphne's own parser: prints its options and exits
except SystemExit as exc:
    assert exc.code == 0, exc.code
from twisted.internet import tcp
print(tcp.ITLSTransport.__name__, "service_identity" in sys.modules, sys.modules.get("OpenSSL"))
"""


def test_serve_is_daphne_without_pyopenssl():
    done = subprocess.run(  # noqa: S603
        [sys.executable, "-c", PROBE], cwd=ROOT, capture_output=True, text=True, timeout=60, check=True
    )
    assert "--bind" in done.stdout  # daphne's options, unchanged
    # Twisted took its no-TLS path (its TLS transport interface is the plain Interface) and loaded neither library.
    assert done.stdout.splitlines()[-1] == "Interface False None"


def test_plain_daphne_would_load_them():
    """The same probe through daphne's own entry point loads both: what serve.py saves is real."""
    probe = PROBE.replace("from kimichat import serve", "from daphne.cli import CommandLineInterface as serve")
    probe = probe.replace("serve.main(", "serve().run(")
    done = subprocess.run(  # noqa: S603
        [sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=60, check=True
    )
    assert done.stdout.splitlines()[-1].startswith("ITLSTransport True <module 'OpenSSL'")


def _listen_backlog(port: int) -> int:
    """The listening socket's queue of connections not accepted yet, as the kernel reports it (``ss``'s Send-Q)."""
    done = subprocess.run(  # noqa: S603
        ["ss", "-ltnH", f"sport = :{port}"],
        capture_output=True,
        text=True,
        timeout=10,
        check=True,  # noqa: S607
    )
    return int(done.stdout.split()[2])


def test_serve_listens_with_a_long_queue(offline_kimi, tmp_path):
    """Twisted listens with a queue of 50: a burst of connections beyond it while the worker was busy lost some
    (600 user API scripts at once: connections reset). The worker's real socket, in the kernel."""
    with open("/proc/sys/net/core/somaxconn") as f:
        expected = min(2048, int(f.read()))  # kimichat/serve.py's LISTEN_BACKLOG, as the kernel caps it
    assert expected > 50
    server = start_daphne(offline_kimi, tmp_path)
    try:
        port = int(server.url.rsplit(":", 1)[1])
        assert _listen_backlog(port) == expected
    finally:
        server.stop()


def test_an_endpoint_that_names_its_backlog_keeps_it():
    from kimichat import serve

    build = serve.with_backlog(lambda **kw: ["tcp:port=1:interface=::1", "tcp:port=2:backlog=7", "unix:/tmp/s"])
    assert build() == ["tcp:port=1:interface=::1:backlog=2048", "tcp:port=2:backlog=7", "unix:/tmp/s"]
