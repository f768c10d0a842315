"""Scale-out: three workers of one consumer group share a six-partition topic, nothing lost."""

from __future__ import annotations

import pytest

from tests.integration.kafka_helpers import wait_for
from tests.integration.reliability import (
    BackgroundProducer,
    Delivery,
    assigned_partitions,
    changelog_windows,
    collect_predictions,
    keyed,
    partition_of,
    read_topic,
    reference_run,
    toy_stream,
    window_mismatches,
)
from tests.integration.workers import WorkerProcess, metric_value

pytestmark = pytest.mark.integration

EVENTS = 2400


def duplicated_spans(settings, delivery) -> dict[int, str]:
    """Partition -> first..last offset (count) of the events predicted more than once."""
    import orjson

    offsets = {orjson.loads(r.value)["event_id"]: (r.partition, r.offset)
               for r in read_topic(settings, settings.events_topic)}
    spans: dict[int, list[int]] = {}
    for event_id in delivery.duplicates:
        partition, offset = offsets[event_id]
        spans.setdefault(partition, []).append(offset)
    return {p: f"{min(o)}..{max(o)} ({len(o)})" for p, o in sorted(spans.items())}


def test_three_workers_split_six_partitions_and_every_event_is_predicted_in_user_order(
        settings_for, make_topics, tiny_bundle, tmp_path):
    settings = settings_for(bundle_path=tiny_bundle, partitions=6)
    make_topics(settings)
    events = toy_stream(EVENTS)
    reference = reference_run(settings, events)
    records = keyed(events)
    half = len(records) // 2

    workers = [WorkerProcess(settings, tmp_path / f"worker-{i}.log", name=f"worker-{i}")
               for i in range(3)]
    # The first half flows while the workers start and join one after another, so the
    # group rebalances mid-stream; the second half once each worker owns two partitions.
    producer = BackgroundProducer(settings, settings.events_topic, records[:half], rate=400)
    try:
        workers[0].start()
        producer.start()
        for worker in workers[1:]:
            worker.start()

        def split() -> list[set[int]] | None:
            owned = [assigned_partitions(w.wait_for_metrics(), settings.events_topic)
                     for w in workers]
            disjoint = sum(len(o) for o in owned) == len(set().union(*owned))
            return owned if disjoint and all(len(o) == 2 for o in owned) else None

        owned = wait_for(split, timeout=180, interval=1.0,
                         message="three workers owning two partitions each")
        producer.join_checked()
        second = BackgroundProducer(settings, settings.events_topic, records[half:])
        second.start()
        second.join_checked()
        got = collect_predictions(settings, [e["event_id"] for e in events], timeout=240)
        pages = [w.wait_for_metrics() for w in workers]
        for worker in workers:
            worker.assert_alive()
    finally:
        for worker in workers:
            worker.stop()

    delivery = Delivery(events, got)
    print(f"scale-out: {delivery.summary()}; partitions owned {owned}; duplicated offsets "
          f"{duplicated_spans(settings, delivery)}")
    # Rebalances (workers joining mid-stream) repeat nothing: offsets are committed before
    # partitions are revoked (streams/faust_fixes.py, fix 3).
    assert delivery.duplicates == {}, duplicated_spans(settings, delivery)
    assert delivery.missing == [], (delivery.missing, [
        (m, partition_of(m.split("-")[0], 6)) for m in delivery.missing])
    assert delivery.unexpected == set()
    assert delivery.order_violations() == []
    assert delivery.mismatches(reference) == []
    # Each worker predicted the events of its own partitions: the work really was split.
    sent = [metric_value(page, "shopcast_predictions_total") for page in pages]
    assert all(n > 0 for n in sent), sent
    assert sum(sent) == len(got)
    # Windows are split across workers (each wrote its partitions' changelog) and none is lost
    # or differs from what one uninterrupted worker builds.
    assert window_mismatches(changelog_windows(settings, reference.encoder),
                             reference.windows) == []
