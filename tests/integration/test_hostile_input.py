"""Hostile input through a real worker: every record of tests/hostile_corpus.py lands in the
dead-letter topic with the right reason or is handled as the contract says, and the worker
stays alive and keeps predicting the good events around them.

The 10 MB record: Kafka's default limits (``max.message.bytes`` about 1 MB on the topic,
``max_request_size`` 1 MB in producers) refuse it before any consumer sees it -- tested
below on a topic with the default limit. The local test broker raises the broker-wide limit
to 16 MB so that such a record *does* reach the worker, which rejects it as ``too_large``
from its length alone (before parsing) and dead-letters only its first 64 KiB.
"""

from __future__ import annotations

import asyncio

import orjson
import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from streams.contracts import MAX_DEAD_LETTER_ORIGINAL, MAX_EVENT_BYTES
from streams.encoding import gap_bucket
from streams.kafka_config import client_kwargs
from streams.topics import rekey_topic
from tests.hostile_corpus import TEN_MB, Case, all_cases
from tests.integration.kafka_helpers import consume, create_topic, json_values, produce
from tests.integration.reliability import (
    Delivery,
    changelog_windows,
    collect_predictions,
    keyed,
    read_topic,
    reference_run,
    same_prediction,
    toy_stream,
)
from tests.integration.workers import WorkerProcess, metric_value

pytestmark = pytest.mark.integration


def original_bytes(letter: dict) -> bytes | None:
    """The rejected record's value as it was sent (from a dead letter)."""
    import base64

    if letter["original_encoding"] == "none":
        return None
    if letter["original_encoding"] == "base64":
        return base64.b64decode(letter["original"])
    return letter["original"].encode("utf-8")


def interleave(good: list[tuple[str, bytes]], cases: list[Case]) -> list[tuple]:
    """The good events with one hostile case after every few of them, in corpus order."""
    out: list[tuple] = []
    step = max(1, len(good) // (len(cases) + 1))
    pending = list(cases)
    for i, record in enumerate(good):
        out.append(record)
        if i % step == step - 1 and pending:
            case = pending.pop(0)
            out.append((case.key, case.value))
    out.extend((case.key, case.value) for case in pending)
    return out


def test_every_hostile_record_is_dead_lettered_or_handled_and_the_worker_keeps_flowing(
        settings_for, make_topics, tiny_bundle, tmp_path):
    settings = settings_for(bundle_path=tiny_bundle, partitions=3)
    make_topics(settings)
    cases = all_cases()
    good_events = toy_stream(250)
    produce(settings, settings.events_topic, interleave(keyed(good_events), cases))
    dlq_cases = [c for c in cases if c.outcome == "dlq"]
    valid = [c for c in cases if c.outcome != "dlq"]
    wanted = [e["event_id"] for e in good_events] + [c.event_id for c in valid]

    with WorkerProcess(settings, tmp_path / "worker.log") as worker:
        got = collect_predictions(settings, wanted, timeout=180)
        letters = json_values(consume(settings, settings.dlq_topic, count=len(dlq_cases),
                                      timeout=60))
        worker.assert_alive()
        metrics = worker.metrics()

    # Every good event is predicted once and exactly as if no hostile record had been there.
    reference = reference_run(settings, good_events)
    delivery = Delivery(good_events, [r for r in got if orjson.loads(r.value)["event_id"]
                                      in reference.predictions])
    assert delivery.missing == [] and delivery.duplicates == {}
    assert delivery.mismatches(reference) == []

    # Each rejected record is in the dead-letter topic once, with its reason.
    reasons = {}
    for letter in letters:
        reasons.setdefault(original_bytes(letter), []).append(letter["reason"])
    for case in dlq_cases:
        kept = None if case.value is None else case.value[:MAX_DEAD_LETTER_ORIGINAL]
        assert reasons.get(kept) == [case.reason], case.name
    assert len(letters) == len(dlq_cases)
    assert metric_value(metrics, "shopcast_dead_letters_total", {"reason": "not_json"}) == \
        sum(c.reason == "not_json" for c in dlq_cases)

    by_event: dict[str, list] = {}
    for record in got:
        by_event.setdefault(orjson.loads(record.value)["event_id"], []).append(record)
    for case in valid:
        predictions = by_event.get(case.event_id, [])
        if case.outcome == "duplicate":
            # Predicted once more, identically: the redelivery is scored on the window as it
            # was when the event first entered.
            assert len(predictions) == 2, case.name
            first, again = (orjson.loads(r.value) for r in predictions)
            assert same_prediction(again, first, tolerance=1e-6)
        elif case.name != "original":
            assert len(predictions) == 1, case.name
        for record in predictions:
            assert record.key == orjson.loads(record.value)["user_id"].encode(), case.name

    windows = changelog_windows(settings, reference.encoder)
    # The redelivered event is in its user's window once.
    assert len(windows[b"u-dup"]) == 1
    # Out of order: accepted, with a gap of 0 s after the newest event.
    ooo = windows[b"u-ooo"]
    assert len(ooo) == 3
    assert int(ooo.records["gap"][-1]) == gap_bucket(0.0, reference.encoder.spec)
    # Unknown fields are ignored; re-keyed records end up in their user's window.
    assert len(windows[b"u-extra"]) == len(windows[b"u-nokey"]) == 1
    # Search text is stored only as hashed features: no personal data in the changelog.
    changelog = b"".join(r.value or b"" for r in read_topic(
        settings, f"{settings.app_id}-windows-changelog"))
    assert b"jo@example.com" not in changelog and b"4111" not in changelog
    assert read_topic(settings, rekey_topic(settings))  # the re-keyed copies went that way


def test_a_10_mb_record_is_rejected_by_its_length_and_dead_lettered_truncated(
        settings_for, make_topics, tiny_bundle, tmp_path, kafka_broker):
    if not kafka_broker.is_apache_kafka:
        pytest.skip("needs the local Apache Kafka, whose limit admits 10 MB records")
    settings = settings_for(bundle_path=tiny_bundle, partitions=1)
    # The events topic must take a 10 MB batch: besides max.message.bytes, a batch may not
    # exceed the topic's segment size (1 MB on the local broker: RecordListTooLarge).
    create_topic(settings, settings.events_topic, 1,
                 {"max.message.bytes": "16777216", "segment.bytes": "33554432"})
    make_topics(settings)
    good = toy_stream(50)
    huge = b'{"pad": "' + b"x" * TEN_MB + b'"}'
    produce(settings, settings.events_topic,
            keyed(good[:25]) + [(b"u-huge", huge)] + keyed(good[25:]), timeout=120)
    with WorkerProcess(settings, tmp_path / "worker.log") as worker:
        got = collect_predictions(settings, [e["event_id"] for e in good], timeout=120)
        letters = json_values(consume(settings, settings.dlq_topic, count=1, timeout=60))
        worker.assert_alive()
    assert Delivery(good, got).missing == []
    (letter,) = letters
    assert letter["reason"] == "too_large"
    assert letter["original_size"] == len(huge) and letter["original_truncated"] is True
    assert len(letter["original"]) == MAX_EVENT_BYTES
    assert f"{len(huge)} bytes" in letter["message"]


def test_kafka_default_limits_refuse_a_10_mb_record_before_any_consumer(settings_for,
                                                                        make_topics):
    settings = settings_for()
    make_topics(settings)  # and the test's topics are deleted afterwards
    topic = f"{settings.app_id}.default-limits"
    # The topic limit Kafka applies by default (message.max.bytes of a stock broker).
    create_topic(settings, topic, 1, {"max.message.bytes": "1048588"})
    huge = b"x" * TEN_MB

    async def send(max_request_size: int) -> str:
        producer = AIOKafkaProducer(**client_kwargs(settings), max_request_size=max_request_size)
        await producer.start()
        try:
            await producer.send_and_wait(topic, huge)
        except KafkaError as exc:
            return type(exc).__name__
        finally:
            await producer.stop()
        return "accepted"

    # A producer with default settings refuses it itself; one allowed to send it is refused
    # by the broker. Either way, the worker never sees it.
    assert asyncio.run(send(1024 * 1024)) == "MessageSizeTooLargeError"
    assert asyncio.run(send(16 * 1024 * 1024)) in ("MessageSizeTooLargeError",
                                                    "RecordTooLargeError")
    assert read_topic(settings, topic) == []
