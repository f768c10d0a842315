"""Broker restart in the middle of a stream: the worker reconnects on its own, nothing lost.

Restarts the session's Apache Kafka (deploy/kafka-local/kafka.sh, through the
``broker_control`` fixture; skipped where the broker cannot be restarted from a test) while
events flow in and predictions flow out. Nobody touches the worker.
"""

from __future__ import annotations

import pytest

from tests.integration.kafka_helpers import wait_for
from tests.integration.reliability import (
    BackgroundProducer,
    Delivery,
    changelog_windows,
    collect_predictions,
    keyed,
    reference_run,
    toy_stream,
    window_mismatches,
)
from tests.integration.workers import WorkerProcess, metric_value

pytestmark = pytest.mark.integration

EVENTS = 2000


def test_worker_rides_out_a_broker_restart_without_losing_an_event(
        settings_for, make_topics, tiny_bundle, tmp_path, broker_control):
    settings = settings_for(bundle_path=tiny_bundle, partitions=6)
    make_topics(settings)
    events = toy_stream(EVENTS)
    reference = reference_run(settings, events)
    # Paced, so that events are still arriving when the broker goes away and comes back.
    producer = BackgroundProducer(settings, settings.events_topic, keyed(events), rate=150,
                                  chunk=100)
    with WorkerProcess(settings, tmp_path / "worker.log") as worker:
        worker.wait_for_metrics()
        producer.start()
        wait_for(lambda: metric_value(worker.metrics(), "shopcast_predictions_total") >= 300,
                 timeout=180, message="predictions flowing before the restart")
        before = int(metric_value(worker.metrics(), "shopcast_predictions_total"))
        down_and_up = broker_control.restart()
        worker.assert_alive()
        producer.join_checked(timeout=300)
        got = collect_predictions(settings, [e["event_id"] for e in events], timeout=240)
        worker.assert_alive()
        after = worker.metrics()
    delivery = Delivery(events, got)
    print(f"restart: broker down and up again in {down_and_up:.1f} s after {before} "
          f"predictions; {delivery.summary()}; "
          f"rebalances {metric_value(after, 'shopcast_rebalances_total'):.0f}")
    assert delivery.missing == []
    assert delivery.unexpected == set()
    assert delivery.mismatches(reference) == []
    assert delivery.order_violations() == []
    assert window_mismatches(changelog_windows(settings, reference.encoder),
                             reference.windows) == []
