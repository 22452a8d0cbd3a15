"""The benchmarks in bench/ still run: each script at tiny sizes, as a subprocess, exits 0 and prints its figures.

The figures themselves are not checked here (a shared, busy machine makes them noise); docs/performance.md has them.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest
import redis

ROOT = Path(__file__).resolve().parents[1]
PG = f"postgres://postgres@127.0.0.1:5432/kimichat_bench_smoke_{os.getpid()}"
REDIS = "redis://127.0.0.1:6379/12"


def run(script: str, *args: str) -> str:
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / script), *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,  # generous: CI may share the two cores with other work
        check=False,
    )
    assert done.returncode == 0, f"{script} exited {done.returncode}:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done.stdout


def services_up() -> bool:
    try:
        with psycopg.connect("postgresql://postgres@127.0.0.1:5432/postgres", connect_timeout=3):
            pass
        redis.Redis.from_url(REDIS, socket_connect_timeout=3).ping()
    except Exception:  # noqa: BLE001 - unreachable, whatever the reason
        return False
    return True


def test_relay_benchmark_runs():
    out = run("relay.py", "--streams", "2", "--tokens", "20", "--ramp", "0.5", "--max-rate-tokens", "50")
    assert "| floor" in out and "| relay" in out
    assert "p99 ms" in out and "idle RSS" in out


def test_burst_benchmark_runs():
    out = run("burst.py", "--burst", "3", "--bursts", "1", "--single", "2", "--tokens", "5", "--cpu-chats", "2")
    assert "| floor: burst 1" in out and "| relay: burst 1" in out and "| relay: one chat" in out
    assert "send→first p50 / p99 / max ms" in out and "ms/chat" in out and "idle RSS" in out


def test_burst_benchmark_waits_for_a_first_token_like_a_provider():
    out = run("burst.py", "--burst", "2", "--bursts", "1", "--single", "1", "--tokens", "3", "--cpu-chats", "0")
    slow = run(
        "burst.py",
        "--burst",
        "2",
        "--bursts",
        "1",
        "--single",
        "1",
        "--tokens",
        "3",
        "--cpu-chats",
        "0",
        "--first-token-ms",
        "400",
    )

    def floor_one_chat(text: str) -> float:
        line = next(line for line in text.splitlines() if line.startswith("  floor: one chat"))
        return float(line.split("p50/p99/max ")[1].split(" /")[0])

    assert floor_one_chat(out) < 300 <= 400 <= floor_one_chat(slow)  # the upstream itself waited


def test_sendpath_benchmark_runs():
    out = run("sendpath.py", "--repeat", "2", "--rounds", "1", "--history", "4")
    assert "send, new chat" in out and "finish_message" in out and "Python calls per call" in out


def test_handler_benchmark_runs():
    out = run("handler.py", "--repeat", "3")
    assert "| API: GET /v1/user/credits" in out and "threads started" in out
    # Every route answered as it should (the script also checks that each repeat answers the same).
    for route, status in [("/healthz", 200), ("/accounts/login/", 200), ("app.css", 200), ("(401)", 401)]:
        row = next(line for line in out.splitlines() if route in line)
        assert f"| {status} " in row, row


def test_userapi_benchmark_runs():
    out = run("userapi.py", "--streams", "2", "--tokens", "20", "--ramp", "0.5")
    assert "| floor" in out and "| api" in out
    assert "first p50 ms" in out and "chunk p99 ms" in out and "load at the end" in out


def test_history_benchmark_runs():
    out = run(
        "history.py",
        *("--users", "2", "--conversations", "3", "--messages", "20", "--long", "10", "--repeat", "2"),
        *("--pg-url", PG),
    )
    assert "sidebar page" in out and "search rare word" in out and "queries" in out


def test_branches_benchmark_runs():
    out = run(
        "branches.py",
        *("--branches", "3", "--per-branch", "6", "--background", "20", "--repeat", "2", "--backends", "sqlite"),
    )
    assert "switch branch" in out and "send path" in out and "queries" in out


def test_scale_benchmark_runs():
    if not services_up():
        pytest.skip("PostgreSQL or Redis not reachable")
    out = run(
        "scale.py",
        *("--streams", "2", "--tokens", "20", "--ramp", "0.5", "--pg-url", PG.replace("smoke", "smoke_scale")),
        *("--redis-url", REDIS),
    )
    assert "1 worker(s): largest level" in out and "2 worker(s): largest level" in out


def test_attachments_benchmark_runs():
    out = run(
        "attachments.py",
        *("--pdf-mb", "0.2", "--docx-pages", "3", "--streams", "2", "--seconds", "6", "--baseline", "1"),
        *("--gap", "0.5"),
    )
    assert "bench.pdf" in out and "bench.docx" in out and "time to ready s" in out
    assert "during PDF upload" in out and "ping p99 ms" in out and "RSS peak MB" in out
