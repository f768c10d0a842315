"""``shopcast bench pipeline --json`` on the session broker: the line it prints, checked.

A small run (2,000 events, 2 s per latency level), so only the shape and the
consistency of the figures are checked, never their size: timings belong to
benchmarks/, not to tests on a shared machine.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys

import orjson
import pytest

from streams.topics import list_topics
from tests.integration.workers import REPO

pytestmark = pytest.mark.integration


def test_the_pipeline_bench_prints_both_throughputs_and_latency_with_its_floor(settings_for,
                                                                              tiny_bundle):
    settings = settings_for(bundle_path=tiny_bundle)
    env = {**os.environ, **settings.to_environment()}
    result = subprocess.run(
        [sys.executable, "-m", "streams.cli", "bench", "pipeline", "--events", "2000",
         "--latency-seconds", "2", "--json"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    line = [x for x in result.stdout.splitlines() if x.startswith("{")][-1]
    data = orjson.loads(line)
    assert data["events"] == 2000 and data["broker"] == settings.bootstrap_servers
    assert data["raw_eps"] > 0 and data["worker_eps"] > 0
    assert data["throughput_ratio"] == pytest.approx(data["worker_eps"] / data["raw_eps"],
                                                     rel=1e-3)
    assert set(data["latency_ms"]) == set(data["raw_latency_ms"]) == {"25%", "50%", "75%"}
    for level, worker in data["latency_ms"].items():
        raw = data["raw_latency_ms"][level]
        assert raw["offered_eps"] == worker["offered_eps"]  # the floor at the same rate
        for lat in (worker, raw):
            assert 0 < lat["p50"] <= lat["p95"] <= lat["p99"]
    cpu = data["cpu"]  # this machine runs Linux: /proc answers
    assert cpu["cores"] == os.cpu_count() and cpu["raw_us_per_event"] > 0
    assert 0 < cpu["raw_machine_cores"] <= os.cpu_count() + 1  # 10 ms ticks in a short span
    # The worker's span runs from one /metrics poll to another a second later: a run this
    # short may be over before the second poll.
    assert cpu["worker_us_per_event"] is None or cpu["worker_us_per_event"] > 0
    # Progress goes to stderr, the JSON line alone to stdout.
    assert "(a) raw aiokafka passthrough" in result.stderr
    # A run leaves nothing behind on the broker: a few hundred MB per run at 100k events.
    assert "deleted the run's" in result.stderr
    left = [t for t in asyncio.run(list_topics(settings)) if t.startswith("bench-")]
    assert left == []
