"""``python -m kimichat.serve``: daphne's own command line (same options), without the TLS stack it never uses here.

Daphne installs Twisted with its TLS extra, and Twisted's TCP module loads pyOpenSSL and service_identity at import
whenever they are installed, for TLS endpoints (``daphne -e ssl:…``) that KimiChat does not open: TLS ends at the
reverse proxy (docs/deployment.md). Blocking the import makes Twisted take its own no-TLS path (the ImportError it
already handles) and keeps 5.4 MB out of every worker's memory (docs/performance.md, issue 23, session 7). A
deployment that wants daphne to terminate TLS itself runs ``daphne`` instead.

It also makes a write to an idle accepted connection go to its socket at once (``kimichat.eager_write``), and
listens with a queue of ``LISTEN_BACKLOG`` connections not accepted yet where Twisted's default is 50: 600 scripts
connecting at once to the user API while the worker was busy got connections reset (docs/performance.md, issue 23,
session 11).
"""

from __future__ import annotations

import sys

# uvicorn's and gunicorn's default. The kernel caps it at net.core.somaxconn (4096 on Linux since 5.4).
LISTEN_BACKLOG = 2048


def with_backlog(build):
    """daphne's ``-b``/``-p`` endpoint builder, its TCP endpoints given ``LISTEN_BACKLOG`` (unless they name one)."""

    def build_with_backlog(*args, **kwargs):
        return [
            f"{description}:backlog={LISTEN_BACKLOG}"
            if description.startswith("tcp:") and ":backlog=" not in description
            else description
            for description in build(*args, **kwargs)
        ]

    return build_with_backlog


def main(argv: list[str] | None = None) -> None:
    sys.modules.setdefault("OpenSSL", None)  # ``import OpenSSL`` now raises ImportError (unless already imported)
    from daphne import cli
    from daphne.cli import CommandLineInterface

    from kimichat import eager_write

    eager_write.install()
    if not hasattr(cli.build_endpoint_description_strings, "__wrapped__"):
        builder = with_backlog(cli.build_endpoint_description_strings)
        builder.__wrapped__ = cli.build_endpoint_description_strings
        cli.build_endpoint_description_strings = builder
    CommandLineInterface().run(sys.argv[1:] if argv is None else argv)


if __name__ == "__main__":
    main()
