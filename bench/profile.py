"""Where daphne's time goes while it relays: py-spy samples the worker under the relay benchmark's load.

    .venv/bin/python bench/profile.py --streams 100

Starts the same setup as bench/relay.py (scratch SQLite, stamping offline server, one daphne), runs one level, and
while it runs records the worker with ``py-spy record --format raw`` for ``--seconds`` (after the ramp). Prints the
share of samples per part of the path (each sample is counted once, by the innermost frame that names a part) and the
hottest functions; the raw stacks are kept with ``--raw FILE`` (flamegraph.pl or speedscope can draw them).
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import harness  # noqa: E402

PARTS = [
    ("database thread: /v1 key check (authenticate)", ["_authenticate (conversations"]),
    ("database thread: /v1 admission (bulk_admit, _admit)", ["_admit_many (conversations"]),
    ("database thread: /v1 settlement (metering.finish)", ["finish (conversations/services/apikeys/metering"]),
    ("database thread: checkpoint", ["checkpoint (conversations"]),
    ("database thread: final store", ["finish_message"]),
    ("database thread: send (prepare_send, balance, auth)", ["concurrent/futures/thread.py"]),
    (
        "upstream read: httpx + its transport",
        ["httpcore/", "httpx/", "h11/", "anyio/", "aiohttp/", "kimi/transport.py"],
    ),
    ("upstream SSE decode + JSON", ["conversations/kimi/sse.py", "conversations/kimi/openai_format.py"]),
    ("relay: coalesce, state, publish", ["_Relay.", "stream_state.py", "GenerationRegistry.publish"]),
    ("channel layer receive", ["InMemoryChannelLayer.receive"]),
    ("consumer: dispatch + chat_delta + orjson", ["await_many_dispatch", "ChatConsumer.", "AsyncConsumer."]),
    ("daphne/autobahn/twisted: websocket write", ["autobahn/", "daphne/", "twisted/"]),
    ("asyncio event loop", ["asyncio/", "selectors.py"]),
]


def summarize(raw: Path) -> tuple[int, Counter, Counter]:
    parts, leaves, total = Counter(), Counter(), 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        n = int(count)
        total += n
        frames = stack.split(";")
        leaves[frames[-1]] += n
        threaded = any("concurrent/futures/thread.py" in f for f in frames)
        part = "other"
        for frame in reversed(frames):
            hit = next((name for name, marks in PARTS if any(m in frame for m in marks)), None)
            if hit and (threaded or not hit.startswith("database")):
                part = hit
                break
        if threaded and not part.startswith("database"):
            part = "database thread: send (prepare_send, balance, auth)"
        parts[part] += n
    return total, parts, leaves


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--streams", type=int, default=100)
    parser.add_argument("--rate", type=float, default=20.0)
    parser.add_argument("--tokens", type=int, default=300)
    parser.add_argument("--ramp", type=float, default=5.0)
    parser.add_argument("--seconds", type=float, default=8.0, help="how long py-spy samples")
    parser.add_argument("--raw", help="keep py-spy's raw stacks in this file")
    parser.add_argument("--from-start", action="store_true", help="sample from the level's start (its sends)")
    parser.add_argument("--idle", action="store_true", help="also sample threads that wait (py-spy --idle)")
    parser.add_argument("--gil", action="store_true", help="only the thread that holds the GIL (py-spy --gil)")
    parser.add_argument("--database-url", default=None, help="default: a scratch SQLite file")
    parser.add_argument("--redis-url", default=None, help="a Redis database of the bench's own (flushed)")
    parser.add_argument("--api", action="store_true", help="the streams through POST /v1/chat/completions")
    args = parser.parse_args(argv)
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")

    if args.database_url and args.database_url.startswith("postgres"):
        harness.recreate_pg_database(args.database_url)  # the bench's own database: dropped and created afresh
    bench_setup = harness.Bench(database_url=args.database_url, redis_url=args.redis_url)
    with bench_setup as bench, tempfile.TemporaryDirectory() as tmp:
        if args.api:
            bench.ensure_api_keys(args.streams)
        else:
            bench.ensure_users(args.streams)
        bench.start_workers(1)
        bench.run_level(1, rate=0, tokens=20, ramp=0, clients=1, api=args.api)  # warm-up
        raw = Path(args.raw or Path(tmp) / "profile.txt")
        result: list = []
        runner = threading.Thread(
            target=lambda: result.append(
                bench.run_level(
                    args.streams, rate=args.rate, tokens=args.tokens, ramp=args.ramp, clients=2, api=args.api
                )
            )
        )
        runner.start()
        time.sleep(0.5 if args.from_start else args.ramp + 2)
        subprocess.run(  # noqa: S603
            [py_spy, "record", "--pid", str(bench.workers[0].pid), "--duration", str(int(args.seconds))]
            + ["--rate", "250", "--format", "raw", "--nonblocking", "-o", str(raw)]
            + (["--idle"] if args.idle else [])
            + (["--gil"] if args.gil else []),
            check=True,
            capture_output=True,
        )
        runner.join()
        total, parts, leaves = summarize(raw)
    if args.database_url and args.database_url.startswith("postgres"):
        harness.drop_pg_database(args.database_url)
    level = result[0]
    print(f"{args.streams} streams × {args.rate:g} tokens/s; p50 {level.p(50):.1f} ms, p99 {level.p(99):.1f} ms")
    print(f"py-spy: {total} samples of daphne's threads over {args.seconds:g} s (load {harness.load()})\n")
    harness.print_table([{"part": k, "share": f"{100 * v / total:.1f}%"} for k, v in parts.most_common()])
    print()
    harness.print_table(
        [{"function (innermost frame)": k[:110], "share": f"{100 * v / total:.1f}%"} for k, v in leaves.most_common(15)]
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
