"""``python -m kimichat.serve``: daphne's command line without the TLS stack (kimichat/serve.py). Every real daphne
of the suite (tests/daphne.py: the browser and scale-out tests) starts through it, so it serves the whole app; this
checks what it leaves out, in a fresh interpreter (this one has imported Twisted already)."""

from __future__ import annotations

import subprocess
import sys

from tests.daphne import ROOT

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
