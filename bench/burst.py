"""The first delta: one chat alone, and a burst of new chats sent at the same moment, on one daphne process.

    .venv/bin/python bench/burst.py                      # SQLite, a burst of 50
    .venv/bin/python bench/burst.py --database-url postgres://postgres@127.0.0.1:5432/kimichat_bench_burst

Same setup as bench/relay.py (scratch install, stamping offline server in this process, one real daphne, client
processes). Each figure is compared in the same run with the floor: the same requests read straight from the offline
server. Printed:

- **one chat**: ``--single`` chats one after another (each a new conversation of its own user, spaced over
  ``--single-ramp`` s so they never overlap): the client's ``send`` to its first delta received, p50 / p99;
- **burst**: ``--burst`` new chats whose ``send`` frames go at the same instant (each its own user and socket): the
  same time, p50 / p99 / max, and ``send`` → upstream request; and the upstream requests of each run against the
  connections they came on, and how many of those it opened (the others the worker's pool kept: up to 20);
- **server CPU per chat**: ``--cpu-chats`` chats of ``--cpu-tokens`` pieces at the upstream's maximum rate, one
  after another; daphne's CPU time (utime + stime from /proc) over them, divided by their number: a figure that the
  machine's load hardly moves, unlike the wall-clock ones.

Every figure comes with the load average of its moment. Exits 1 if a piece was lost, reordered or changed.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import harness  # noqa: E402


def _first(level: harness.LevelResult) -> str:
    values = level.send_to_first_ms
    return f"{harness.percentile(values, 50):.1f} / {harness.percentile(values, 99):.1f} / {max(values or [0]):.1f}"


def _upstream(level: harness.LevelResult) -> str:
    values = level.send_to_upstream_ms
    return f"{harness.percentile(values, 50):.1f} / {harness.percentile(values, 99):.1f}" if values else "-"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--burst", type=int, default=50, help="chats sent at the same instant")
    parser.add_argument("--bursts", type=int, default=3, help="how many bursts (each of new users' new chats)")
    parser.add_argument("--single", type=int, default=10, help="single chats, one after another")
    parser.add_argument("--single-ramp", type=float, default=3.0, help="seconds over which the single chats go")
    parser.add_argument("--tokens", type=int, default=40, help="pieces per answer of the burst and single chats")
    parser.add_argument("--rate", type=float, default=20.0, help="their tokens per second")
    parser.add_argument(
        "--first-token-ms",
        type=float,
        default=0.0,
        help="the upstream's wait before each burst and single chat's first piece (a real provider's time to first "
        "token; the floor waits it too)",
    )
    parser.add_argument("--cpu-chats", type=int, default=20, help="chats whose server CPU is averaged (0: skip)")
    parser.add_argument("--cpu-tokens", type=int, default=500, help="pieces of each, at the maximum rate")
    parser.add_argument("--clients", type=int, default=2, help="client processes")
    parser.add_argument("--database-url", default=None, help="default: a scratch SQLite file")
    parser.add_argument("--redis-url", default=None, help="a Redis database of the bench's own (flushed)")
    parser.add_argument("--env", action="append", default=[], metavar="NAME=VALUE", help="extra setting for daphne")
    args = parser.parse_args(argv)

    info = harness.machine()
    print(f"machine: {info['cpus']} CPUs ({info['cpu_model']}), {info['memory_gb']} GB; load {harness.load()}")
    postgres = bool(args.database_url and args.database_url.startswith("postgres"))
    if postgres:
        harness.recreate_pg_database(args.database_url)
    rows, bad = [], 0
    extra_env = dict(item.split("=", 1) for item in args.env)
    try:
        with harness.Bench(database_url=args.database_url, redis_url=args.redis_url, extra_env=extra_env) as bench:
            bench.ensure_users(max(args.burst, args.single, args.cpu_chats, 1))
            bench.start_workers(1)
            idle = bench.idle_rss_mb()[0]
            bench.run_level(1, rate=0, tokens=20, ramp=0, clients=1)  # warm-up: model list, connections
            print(f"daphne pid {bench.workers[0].pid}: idle RSS {idle:.1f} MB; database {bench.database_url[:10]}")

            def level(label: str, streams: int, **kwargs) -> harness.LevelResult:
                nonlocal bad
                result = bench.run_level(streams, clients=min(args.clients, streams), label=label, **kwargs)
                if not label.startswith("floor"):
                    bad += result.lost + result.reordered + result.text_mismatches
                extra = f"; errors {result.errors}" if result.errors else ""
                print(f"  {label}: send→first delta p50/p99/max {_first(result)} ms (load {result.load}){extra}")
                rows.append(
                    {
                        "run": label,
                        "chats": streams,
                        "send→first p50 / p99 / max ms": _first(result),
                        "send→upstream p50 / p99 ms": _upstream(result),
                        "piece p50 / p99 ms": f"{result.p(50):.1f} / {result.p(99):.1f}",
                        "lost / reordered / bad text / failed": (
                            f"{result.lost} / {result.reordered} / {result.text_mismatches} / {result.failed_streams}"
                        ),
                        "server CPU s": f"{result.server_cpu:.2f}" if result.server_cpu else "-",
                        "upstream requests / connections (new)": (
                            f"{result.upstream_requests} / {result.upstream_connections}"
                            f" ({result.upstream_new_connections})"
                        ),
                        "load": result.load,
                    }
                )
                return result

            first = {"first_token_s": args.first_token_ms / 1000}
            single = {"rate": 0, "tokens": args.tokens, "ramp": args.single_ramp, **first}
            level("floor: one chat", args.single, floor=True, **single)
            level("relay: one chat", args.single, **single)
            burst = {"rate": args.rate, "tokens": args.tokens, "ramp": 0, **first}
            for index in range(args.bursts):
                level(f"floor: burst {index + 1}", args.burst, floor=True, **burst)
                level(f"relay: burst {index + 1}", args.burst, **burst)
            if args.cpu_chats:
                cpu = level(
                    f"relay: {args.cpu_tokens}-piece chats",
                    args.cpu_chats,
                    rate=0,
                    tokens=args.cpu_tokens,
                    ramp=args.cpu_chats * 0.2,
                )
                per_chat = 1000 * cpu.server_cpu / args.cpu_chats
                print(f"  server CPU per {args.cpu_tokens}-piece chat: {per_chat:.1f} ms (load {cpu.load})")
                rows[-1]["server CPU s"] += f" ({per_chat:.1f} ms/chat)"
            idle_after = bench.idle_rss_mb()[0]
            errors = bench.log_errors()
    finally:
        if postgres:
            harness.drop_pg_database(args.database_url)
    if errors:
        print("\nlast errors in daphne's log:\n  " + "\n  ".join(errors))
    print()
    harness.print_table(rows)
    print(f"\nidle RSS at start {idle:.1f} MB, after the run {idle_after:.1f} MB")
    if bad:
        print(f"FAILED: {bad} pieces lost, reordered or changed in streams that completed")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
