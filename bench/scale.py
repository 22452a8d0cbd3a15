"""Does a second daphne worker double the streams the relay carries? PostgreSQL + Redis, one worker then two.

    .venv/bin/python bench/scale.py

The relay benchmark (bench/relay.py) on the scale-out setup: a PostgreSQL database of the bench's own (dropped
afterwards) and a Redis database of its own (flushed) for the channel layer, the stream state and the cache. Clients
are spread over the workers round-robin. For one worker and then two, the concurrency rises through ``--streams``
until the p99 added latency passes ``--p99-ms``, fewer than ``--min-live`` of the level's streams were ever
streaming at the same moment (its sends queued so long that the first answers ended before the last began: it never
carried that many), or a piece is lost or a stream fails; the largest level that kept it is reported, and the ratio
two/one. Skips with a notice when PostgreSQL or Redis does not answer.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import harness  # noqa: E402

DEFAULT_PG = "postgres://postgres@127.0.0.1:5432/kimichat_bench_scale"
DEFAULT_REDIS = "redis://127.0.0.1:6379/11"


def redis_available(url: str) -> str | None:
    import redis

    try:
        redis.Redis.from_url(url, socket_connect_timeout=3).ping()
        return None
    except Exception as exc:  # noqa: BLE001 - any failure means "not reachable"
        return str(exc) or type(exc).__name__


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--streams", default="50,100,150,200,300,400", help="levels tried in order, comma-separated")
    parser.add_argument("--workers", default="1,2", help="worker counts to compare")
    parser.add_argument("--p99-ms", type=float, default=500.0, help="the latency a level must keep")
    parser.add_argument(
        "--min-live",
        type=float,
        default=0.9,
        help="share of a level's streams that must be streaming at the same moment for it to count as carried",
    )
    parser.add_argument("--rate", type=float, default=20.0)
    parser.add_argument("--tokens", type=int, default=160)
    parser.add_argument("--ramp", type=float, default=3.0)
    parser.add_argument("--clients", type=int, default=2)
    parser.add_argument("--pg-url", default=DEFAULT_PG, help="a database of the bench's own: dropped and recreated")
    parser.add_argument("--redis-url", default=DEFAULT_REDIS, help="a Redis database of the bench's own: flushed")
    parser.add_argument("--env", action="append", default=[], metavar="NAME=VALUE", help="extra setting for daphne")
    args = parser.parse_args(argv)
    levels = [int(n) for n in args.streams.split(",") if n.strip()]
    worker_counts = [int(n) for n in args.workers.split(",") if n.strip()]

    for name, why in (("PostgreSQL", harness.pg_available(args.pg_url)), ("Redis", redis_available(args.redis_url))):
        if why is not None:
            print(f"NOTICE: {name} not reachable ({why}); skipping the scale benchmark.")
            return 0
    info = harness.machine()
    print(f"machine: {info['cpus']} CPUs ({info['cpu_model']}), {info['memory_gb']} GB; load {harness.load()}")
    harness.recreate_pg_database(args.pg_url)
    rows, best, bad = [], {}, 0
    try:
        extra_env = dict(item.split("=", 1) for item in args.env)
        with harness.Bench(database_url=args.pg_url, redis_url=args.redis_url, extra_env=extra_env) as bench:
            bench.ensure_users(max(levels))
            for workers in worker_counts:
                bench.start_workers(workers)
                bench.run_level(min(workers, 2), rate=0, tokens=20, ramp=0, clients=1)  # warm-up, not reported
                best[workers] = 0
                for streams in levels:
                    result = bench.run_level(
                        streams,
                        rate=args.rate,
                        tokens=args.tokens,
                        ramp=args.ramp,
                        clients=args.clients,
                        label=f"{workers} worker{'s' if workers > 1 else ''}",
                    )
                    rows.append(result.row())
                    broken = result.lost + result.reordered + result.text_mismatches + result.failed_streams
                    # Carried means at the same time: a level whose sends queue so long that its first answers end
                    # before its last ones start never held that many streams, whatever their pieces' latency.
                    live = result.peak_live()
                    carried = live >= args.min_live * streams
                    ok = result.p(99) <= args.p99_ms and carried and not broken
                    verdict = "" if ok else f" — {broken} broken {result.errors}" if broken else " — over the limit"
                    print(
                        f"  {workers} worker(s), {streams} streams: p99 {result.p(99):.1f} ms, peak live {live}"
                        f"{verdict}",
                        flush=True,
                    )
                    if not ok:
                        bad += broken
                        break
                    best[workers] = streams
    finally:
        harness.drop_pg_database(args.pg_url)
    print()
    harness.print_table(rows)
    print()
    for workers, streams in best.items():
        print(f"{workers} worker(s): largest level with p99 ≤ {args.p99_ms:g} ms: {streams} streams")
    if best.get(1) and best.get(2):
        print(f"two workers / one: {best[2] / best[1]:.2f}×")
    if all(streams == levels[-1] for streams in best.values()):
        print("(every level kept the limit: raise --streams to find the edge)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
