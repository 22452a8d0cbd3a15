"""How much latency the relay adds to Kimi's own stream, for 1 to N concurrent answers on one daphne process.

    .venv/bin/python bench/relay.py --streams 1,100,500,1000

The offline server (benchmark mode: each content piece stamped with its send time on CLOCK_MONOTONIC) runs in this
process; daphne runs as a real process on a scratch SQLite database (or ``--database-url``); client processes open
one websocket per stream, each logged in as its own user, send, and time every piece from the upstream's send to
their receive. Each level is run twice: through the relay, and read straight from the offline server (the floor).
Then one stream at the offline server's maximum rate. Prints one table; exits 1 if any piece was lost or reordered.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import harness  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--streams", default="1,100,500,1000", help="concurrency levels, comma-separated")
    parser.add_argument("--rate", type=float, default=20.0, help="tokens per second of each stream")
    parser.add_argument("--tokens", type=int, default=300, help="pieces per answer at --rate")
    parser.add_argument("--ramp", type=float, default=5.0, help="seconds over which a level's streams start")
    parser.add_argument("--max-rate-tokens", type=int, default=3000, help="pieces of the max-rate stream (0: skip)")
    parser.add_argument("--clients", type=int, default=2, help="client processes (they share the cores too)")
    parser.add_argument("--no-floor", action="store_true", help="skip the direct-to-upstream comparison")
    parser.add_argument("--database-url", default=None, help="default: a scratch SQLite file")
    parser.add_argument("--env", action="append", default=[], metavar="NAME=VALUE", help="extra setting for daphne")
    args = parser.parse_args(argv)
    levels = [int(n) for n in args.streams.split(",") if n.strip()]

    info = harness.machine()
    print(f"machine: {info['cpus']} CPUs ({info['cpu_model']}), {info['memory_gb']} GB; load {harness.load()}")
    rows, bad = [], 0
    extra_env = dict(item.split("=", 1) for item in args.env)
    with harness.Bench(database_url=args.database_url, extra_env=extra_env) as bench:
        bench.ensure_users(max(levels, default=1))
        bench.start_workers(1)
        idle = bench.idle_rss_mb()[0]
        # Warm-up (not reported): the first send fetches the model list and fills the connection pools.
        bench.run_level(1, rate=0, tokens=20, ramp=0, clients=1)
        print(f"daphne pid {bench.workers[0].pid}: idle RSS {idle:.1f} MB; database {bench.database_url.split(':')[0]}")
        runs = [(n, args.rate, args.tokens, args.ramp) for n in levels]
        if args.max_rate_tokens:
            runs.append((1, 0.0, args.max_rate_tokens, 0.0))
        for streams, rate, tokens, ramp in runs:
            kind = "max rate" if rate == 0 else f"{streams} streams"
            if not args.no_floor:
                floor = bench.run_level(
                    streams, rate=rate, tokens=tokens, ramp=ramp, clients=args.clients, floor=True, label="floor"
                )
                rows.append(floor.row())
            relay = bench.run_level(streams, rate=rate, tokens=tokens, ramp=ramp, clients=args.clients, label="relay")
            rows.append(relay.row())
            bad += relay.lost + relay.reordered + relay.text_mismatches  # failed streams are shown, not fatal
            extra = f"; errors {relay.errors}" if relay.errors else ""
            print(f"  {kind}: relay p50 {relay.p(50):.1f} ms, p99 {relay.p(99):.1f} ms{extra}", flush=True)
        idle_after = bench.idle_rss_mb()[0]
        errors = bench.log_errors()
    if errors:
        print("\nlast errors in daphne's log:\n  " + "\n  ".join(errors))
    print()
    harness.print_table(rows)
    print(f"\nidle RSS at start {idle:.1f} MB, after the run {idle_after:.1f} MB")
    print("latency = client receive − upstream send, per content piece (CLOCK_MONOTONIC); floor = read directly")
    if bad:
        print(f"FAILED: {bad} pieces lost, reordered or changed in streams that completed")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
