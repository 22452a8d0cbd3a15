"""``python -m kimichat.serve``: daphne's own command line (same options), without the TLS stack it never uses here.

Daphne installs Twisted with its TLS extra, and Twisted's TCP module loads pyOpenSSL and service_identity at import
whenever they are installed, for TLS endpoints (``daphne -e ssl:…``) that KimiChat does not open: TLS ends at the
reverse proxy (docs/deployment.md). Blocking the import makes Twisted take its own no-TLS path (the ImportError it
already handles) and keeps 5.4 MB out of every worker's memory (docs/performance.md, issue 23, session 7). A
deployment that wants daphne to terminate TLS itself runs ``daphne`` instead.

It also makes a write to an idle accepted connection go to its socket at once (``kimichat.eager_write``).
"""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> None:
    sys.modules.setdefault("OpenSSL", None)  # ``import OpenSSL`` now raises ImportError (unless already imported)
    from daphne.cli import CommandLineInterface

    from kimichat import eager_write

    eager_write.install()
    CommandLineInterface().run(sys.argv[1:] if argv is None else argv)


if __name__ == "__main__":
    main()
