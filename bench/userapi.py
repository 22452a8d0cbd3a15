"""How much latency KimiChat's own ``POST /v1/chat/completions`` (streaming) adds to Kimi's stream, 1 to N streams.

    .venv/bin/python bench/userapi.py --streams 1,100

As bench/relay.py, but through the API instead of the websocket: the stamping offline server runs in this process,
one daphne worker as a real process on a scratch SQLite database; each stream is its own user with its own API key
(``Authorization: Bearer kc-…``), streamed by httpx in client processes (bench/wsclient.py, mode ``api``). Each
level runs twice: read straight from the offline server (the floor), then through the API. Every piece is timed from
the upstream's send to the client's receive; "first" is each stream's first piece. Prints the figures with the load
average; exits 1 if any piece was lost, reordered or changed.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import harness  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--streams", default="1,100", help="concurrency levels, comma-separated")
    parser.add_argument("--rate", type=float, default=20.0, help="tokens per second of each stream")
    parser.add_argument("--tokens", type=int, default=300, help="pieces per answer")
    parser.add_argument("--ramp", type=float, default=5.0, help="seconds over which a level's streams start")
    parser.add_argument("--clients", type=int, default=2, help="client processes (they share the cores too)")
    args = parser.parse_args(argv)
    levels = [int(n) for n in args.streams.split(",") if n.strip()]

    info = harness.machine()
    print(f"machine: {info['cpus']} CPUs ({info['cpu_model']}), {info['memory_gb']} GB; load {harness.load()}")
    rows, summary, bad = [], [], 0
    with harness.Bench() as bench:
        bench.ensure_api_keys(max(levels, default=1))
        bench.start_workers(1)
        # Warm-up (not reported): the first request fetches the model list and fills the connection pools.
        bench.run_level(1, rate=0, tokens=20, ramp=0, clients=1, api=True)
        for streams in levels:
            common = {"rate": args.rate, "tokens": args.tokens, "ramp": args.ramp, "clients": args.clients}
            floor = bench.run_level(streams, floor=True, label="floor", **common)
            api = bench.run_level(streams, api=True, label="api", **common)
            rows += [floor.row(), api.row()]
            bad += api.lost + api.reordered + api.text_mismatches + api.failed_streams
            added = {
                "streams": streams,
                "first p50 ms": _added(api.first_ms, floor.first_ms, 50),
                "first p99 ms": _added(api.first_ms, floor.first_ms, 99),
                "chunk p50 ms": _added(api.latencies_ms, floor.latencies_ms, 50),
                "chunk p99 ms": _added(api.latencies_ms, floor.latencies_ms, 99),
                "lost": api.lost,
                "reordered": api.reordered,
                "bad text": api.text_mismatches,
                "failed": api.failed_streams,
                "load": api.load,
            }
            summary.append(added)
            errors = f"; errors {api.errors}" if api.errors else ""
            print(
                f"  {streams} streams: added first p50 {added['first p50 ms']} ms, p99 {added['first p99 ms']} ms; "
                f"per chunk p50 {added['chunk p50 ms']} ms, p99 {added['chunk p99 ms']} ms; load {api.load}{errors}",
                flush=True,
            )
        log_errors = bench.log_errors()
    if log_errors:
        print("\nlast errors in daphne's log:\n  " + "\n  ".join(log_errors))
    print()
    harness.print_table(rows)
    print()
    harness.print_table(summary)
    print("\nlatency = client receive − upstream send, per content piece (CLOCK_MONOTONIC); floor = read directly;")
    print("added = api − floor at the same percentile (ms); first = each stream's first piece")
    print(f"load at the end {harness.load()}")
    if bad:
        print(f"FAILED: {bad} pieces lost, reordered or changed, or streams failed")
        return 1
    return 0


def _added(api: list[float], floor: list[float], q: float) -> str:
    return f"{harness.percentile(api, q) - harness.percentile(floor, q):.1f}"


if __name__ == "__main__":
    sys.exit(main())
