"""A few seconds of bench/soak.py (the full run is 200 users for 10 minutes; figures in docs/reliability.md): users
chatting with injected mid-stream errors and tabs closed mid-answer, then every send checked in the database."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.daphne import ROOT, database_url

pytestmark = [pytest.mark.django_db(transaction=True)]


def test_soak_smoke_loses_nothing(tmp_path):
    report_path = tmp_path / "soak.json"
    command = [
        sys.executable, "bench/soak.py", "--users", "6", "--duration", "8", "--warmup", "2", "--think", "0.2:0.5",
        "--error-rate", "0.2", "--close-rate", "0.2", "--database-url", database_url(), "--json", str(report_path),
        "--redis-url", os.environ.get("REDIS_URL", ""),
        "--max-rss-growth", "1.0",  # seconds of load say nothing about leaks; the 10-minute run checks 10 %
    ]  # fmt: skip
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=180, check=False)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    report = json.loads(report_path.read_text())
    assert report["lost"] == 0 and report["status_mismatches"] == 0 and report["ledger_problems"] == []
    assert report["answers_completed"] >= 6 and report["outcomes"].get("error", 0) >= 1  # faults were injected
    assert report["tabs_closed_mid_answer"] >= 1
