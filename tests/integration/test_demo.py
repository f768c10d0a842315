"""`shopcast demo` end to end on the embedded tansu broker, as a new user runs it."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.integration.workers import REPO

pytestmark = pytest.mark.integration


def test_demo_scores_every_valid_event_on_the_embedded_broker(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("SHOPCAST_")}
    env["SHOPCAST_DATA_DIR"] = str(tmp_path)
    env["SHOPCAST_METRICS_PORT"] = "0"
    result = subprocess.run(
        [sys.executable, "-m", "streams.cli", "demo", "--duration", "20", "--rate", "200",
         "--json"], cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-4000:]
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 1, result.stdout  # --json prints exactly one line on stdout
    summary = json.loads(lines[0])
    assert summary["events"] > 1000
    assert summary["predictions"] == summary["events"]
    assert summary["dead_letters"] == summary["hostile_sent"] > 0
    assert summary["p50_ms"] is not None and summary["p99_ms"] >= summary["p50_ms"]
    assert "embedded broker (tansu) ready" in result.stderr
