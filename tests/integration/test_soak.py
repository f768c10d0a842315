"""A one-minute soak in CI: steady load, short TTL; the table stays bounded, memory does not grow.

The ten-minute version at half the measured maximum throughput, with its RSS plot, is
``benchmarks/soak.py`` (the figures are in docs/reliability.md). Nothing here asserts a time:
only counts and ratios measured within the run.
"""

from __future__ import annotations

import pytest

from benchmarks.soak import soak
from tests.integration.workers import WorkerProcess

pytestmark = pytest.mark.integration

RATE = 150  # events/s: well under one worker's maximum on a busy 2-core machine
EVENTS_PER_USER = 8  # benchmarks.soak.RollingShop's default
CONCURRENT = 40


def test_a_minute_of_steady_load_keeps_the_window_table_bounded_and_memory_flat(
        settings_for, make_topics, tiny_bundle, tmp_path):
    settings = settings_for(bundle_path=tiny_bundle, partitions=3, window_ttl_seconds=8,
                            window_sweep_seconds=2)
    make_topics(settings)
    with WorkerProcess(settings, tmp_path / "worker.log") as worker:
        worker.wait_for_metrics(timeout=120)
        result = soak(settings, worker, rate=RATE, duration=60, warmup=25, interval=1.0)
        worker.assert_alive()
    figures = result.figures()
    print(f"soak: {figures}")
    settled = result.settled()
    assert len(settled) >= 10

    # Bounded by the TTL: about new users/s x (TTL + sweep + a visit) windows live at once;
    # allow twice that plus every user of the current band. Without expiry the table would
    # hold every user seen (over a thousand by the end).
    users_seen = result.sent / EVENTS_PER_USER
    bound = 2 * RATE / EVENTS_PER_USER * (settings.window_ttl_seconds
                                         + settings.window_sweep_seconds + 3) + CONCURRENT
    assert max(s.windows for s in settled) <= bound, (bound, figures)
    assert settled[-1].windows < users_seen / 2
    assert figures["windows_expired"] > 0

    # Memory: no growth beyond a generous bound between the end of the warm-up and the end.
    assert settled[-1].rss <= 1.25 * settled[0].rss, figures
    # And the worker kept up: nearly everything sent was predicted by the last sample.
    assert figures["predicted_share"] >= 0.8, figures
