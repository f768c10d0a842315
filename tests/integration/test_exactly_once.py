"""Exactly-once (``SHOPCAST_PROCESSING_GUARANTEE=exactly_once``): a SIGKILL crash mid-replay
leaves no duplicate prediction for a ``read_committed`` consumer.

Faust's exactly-once runs one transactional producer per partition it owns and commits the
consumed offsets in that producer's transaction. A worker's outputs for an event -- its
prediction, its window's changelog record, a dead letter or a re-keyed copy -- must go into
the transaction of the event's partition, so that they commit or abort with its offset. When
the worker dies, the survivor's producer for that partition fences the dead one and its open
transaction is aborted: ``read_committed`` consumers (the predictions' subscribers, and the
survivor restoring the window table) never see its uncommitted outputs, and the replay from
the committed offset writes them once.

Consumers of the predictions topic must read with ``isolation_level=read_committed`` under
exactly-once; a ``read_uncommitted`` consumer sees the aborted copies too (counted below).

It does not hold with faust-streaming 0.15.3 here (docs/reliability.md has the evidence):
the survivor never processes the dead worker's partitions -- with no committed offset it
starts them at their end, so a quarter of the events get no prediction -- and the worker's
outputs are not written in Faust's transactions anyway. Exactly-once therefore stays an
option, not the default, and this test is expected to fail (strict: it fails the run the
day it passes, so the docs get updated). It takes minutes, so it runs only with::

    SHOPCAST_FULL_RELIABILITY=1 SHOPCAST_TEST_BOOTSTRAP=127.0.0.1:19092 \\
        .venv/bin/python -m pytest tests/integration/test_exactly_once.py -s
"""

from __future__ import annotations

import os

import pytest

from tests.integration.reliability import (
    Delivery,
    crash_run,
    read_topic,
    reference_run,
    toy_stream,
)

pytestmark = pytest.mark.integration

EVENTS = 4000


@pytest.mark.slow
@pytest.mark.skipif(os.environ.get("SHOPCAST_FULL_RELIABILITY") != "1",
                    reason="minutes long, and known to fail: SHOPCAST_FULL_RELIABILITY=1")
@pytest.mark.xfail(strict=True, reason="Faust 0.15 exactly-once: the survivor skips the dead "
                   "worker's uncommitted partitions to their end; outputs are not transactional")
def test_sigkill_under_exactly_once_leaves_no_duplicate_for_read_committed_consumers(
        settings_for, make_topics, tiny_bundle, tmp_path, kafka_broker):
    if not kafka_broker.is_apache_kafka:
        pytest.skip(f"exactly-once needs Kafka transactions: {kafka_broker.description}")
    settings = settings_for(bundle_path=tiny_bundle, partitions=6,
                            processing_guarantee="exactly_once")
    make_topics(settings)
    events = toy_stream(EVENTS)
    reference = reference_run(settings, events)
    run = crash_run(settings, events, reference, tmp_path, isolation_level="read_committed",
                    timeout=150)
    uncommitted = Delivery(events, read_topic(settings, settings.predictions_topic,
                                              isolation_level="read_uncommitted"))
    print(f"eos: read_committed: {run.report()}; read_uncommitted sees "
          f"{sum(uncommitted.duplicates.values())} extra predictions")
    delivery = run.delivery
    assert delivery.missing == []
    assert delivery.unexpected == set()
    assert delivery.duplicates == {}, f"{len(delivery.duplicates)} events predicted twice"
    assert delivery.mismatches(reference) == []
    assert delivery.order_violations() == []
    assert run.window_problems == []
