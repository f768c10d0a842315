"""Crash: SIGKILL one of two workers in the middle of a replay; nothing is lost.

At-least-once, as the tests show it: after the survivor takes over, every event has a
prediction; the duplicates are exactly the events the dead worker had predicted after its
last offset commit (a contiguous run of offsets per partition it owned), each identical to
the original apart from ``scored_at``; and the windows equal what an uninterrupted run builds.

The CI version replays 4,000 events. The judged version replays 50,000::

    SHOPCAST_FULL_RELIABILITY=1 SHOPCAST_TEST_BOOTSTRAP=127.0.0.1:19092 \\
        .venv/bin/python -m pytest tests/integration/test_crash.py -k 50k -s

and ``benchmarks/crash_recovery.py`` measures the takeover time with and without standbys.
"""

from __future__ import annotations

import os

import pytest

from tests.integration.reliability import crash_run, reference_run, toy_stream

pytestmark = pytest.mark.integration

FULL = os.environ.get("SHOPCAST_FULL_RELIABILITY") == "1"


def check(run, events) -> None:
    print(f"crash: {run.report()}")
    delivery = run.delivery
    assert delivery.missing == [], f"{len(delivery.missing)} events without a prediction"
    assert delivery.unexpected == set()
    # Each copy of a prediction is the prediction of an uninterrupted run.
    assert delivery.mismatches(run.reference) == []
    assert delivery.order_violations() == []
    # Duplicates are a replay from the last commit: contiguous offsets, once each, only on
    # partitions the victim owned.
    assert set(delivery.duplicates.values()) <= {1}
    assert set(run.duplicated_offsets) <= run.victim_partitions
    for partition, offsets in run.duplicated_offsets.items():
        assert offsets == list(range(offsets[0], offsets[-1] + 1)), partition
    assert run.window_problems == []


def run_crash(settings_for, make_topics, tiny_bundle, tmp_path, count: int, **settings):
    # A replay as fast as possible puts dozens of one user's events between two commits: keep
    # a margin so every redelivery is scored on the window it first had (streams/pipeline.py).
    settings = settings_for(bundle_path=tiny_bundle, partitions=6, redelivery_margin=32,
                            **settings)
    make_topics(settings)
    events = toy_stream(count)
    reference = reference_run(settings, events)
    return crash_run(settings, events, reference, tmp_path), events


def test_sigkill_of_one_of_two_workers_with_standbys_loses_no_event(
        settings_for, make_topics, tiny_bundle, tmp_path):
    run, events = run_crash(settings_for, make_topics, tiny_bundle, tmp_path, 4000,
                            standby_replicas=1)
    check(run, events)


@pytest.mark.slow
@pytest.mark.skipif(not FULL, reason="the 50k replay takes minutes: SHOPCAST_FULL_RELIABILITY=1")
@pytest.mark.parametrize("standby_replicas", [0, 1])
def test_sigkill_during_a_replay_of_50k_events_loses_no_event(
        settings_for, make_topics, tiny_bundle, tmp_path, standby_replicas):
    run, events = run_crash(settings_for, make_topics, tiny_bundle, tmp_path, 50_000,
                            standby_replicas=standby_replicas)
    check(run, events)
