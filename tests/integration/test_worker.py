"""The streaming predictor end to end on a real broker: events in, predictions and DLQ out."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections import Counter, defaultdict
from pathlib import Path

import jsonschema
import orjson
import pytest

from streams.eventlog import read_log
from tests.integration.kafka_helpers import consume, json_values, produce, wait_for
from tests.integration.workers import REPO, WorkerProcess, metric_value

pytestmark = pytest.mark.integration

SCHEMAS = Path(__file__).parents[2] / "streams" / "schemas"


@pytest.fixture(scope="module")
def log_events(tiny_log):
    """The tiny log's events as dicts, in file (time) order."""
    return [orjson.loads(r.value) for r in read_log(tiny_log)]


def keyed(events):
    return [(e["user_id"], orjson.dumps(e)) for e in events]


def predictions_by_event(records):
    out = defaultdict(list)
    for record in records:
        out[json.loads(record.value)["event_id"]].append(record)
    return out


def test_every_valid_event_gets_one_prediction_keyed_by_user(
        settings_for, make_topics, tiny_bundle, log_events, tmp_path):
    settings = settings_for(bundle_path=tiny_bundle)
    make_topics(settings)
    events = log_events[:600]
    produce(settings, settings.events_topic, keyed(events))
    with WorkerProcess(settings, tmp_path / "worker.log") as worker:
        records = consume(settings, settings.predictions_topic, count=len(events), timeout=120)
        metrics = worker.wait_for_metrics()
    schema = json.loads((SCHEMAS / "prediction.v1.json").read_text())
    by_event = predictions_by_event(records)
    assert set(by_event) == {e["event_id"] for e in events}
    assert all(len(v) == 1 for v in by_event.values())
    for record in records:
        prediction = json.loads(record.value)
        jsonschema.validate(prediction, schema)
        assert record.key == prediction["user_id"].encode()
    # Each user's predictions come in that user's event order.
    order = defaultdict(list)
    for record in sorted(records, key=lambda r: (r.partition, r.offset)):
        prediction = json.loads(record.value)
        order[prediction["user_id"]].append(prediction["event_id"])
    for user, ids in order.items():
        assert ids == [e["event_id"] for e in events if e["user_id"] == user]
    assert metric_value(metrics, "shopcast_predictions_total") == len(events)


def test_partitions_without_commits_are_rewound_from_the_consumer_s_own_thread(
        settings_for, make_topics, tiny_bundle, log_events, tmp_path):
    # Fresh topics: nothing committed, so the worker seeks every partition to its
    # beginning after the first rebalance (faust_fixes.rewind_uncommitted). asyncio's
    # debug mode refuses an operation on an event loop from another thread: the seek
    # must run in Faust's consumer thread, or recovery crashes and nothing is predicted.
    settings = settings_for(bundle_path=tiny_bundle)
    make_topics(settings)
    events = log_events[:100]
    produce(settings, settings.events_topic, keyed(events))
    log_path = tmp_path / "worker.log"
    with WorkerProcess(settings, log_path, extra_env={"PYTHONASYNCIODEBUG": "1"}):
        records = consume(settings, settings.predictions_topic, count=len(events), timeout=120)
    assert {json.loads(r.value)["event_id"] for r in records} == {e["event_id"] for e in events}
    log = log_path.read_text()
    assert "Non-thread-safe operation" not in log


HOSTILE = [
    (b"\xff\xfe\xfd not utf-8", "bad_encoding"),
    (b"{not json", "not_json"),
    (b'{"event_id": "h", "user_id": "u", "type": "click", "ts": NaN, "item_id": "i"}',
     "not_json"),
    (b"[" * 3000 + b"]" * 3000, "not_json"),
    (b'"a string"', "not_object"),
    (b'{"user_id": "u-x", "type": "click", "ts": 1764400000000, "item_id": "i"}',
     "missing_field"),
    (b'{"event_id": "h2", "user_id": "u-x", "type": "click", "ts": 1764400000000}',
     "missing_field"),
    (b'{"event_id": "h3", "user_id": ["u"], "type": "click", "ts": 1764400000000, '
     b'"item_id": "i"}', "bad_type"),
    (b'{"event_id": "h4", "user_id": "u-x", "type": "levitate", "ts": 1764400000000}',
     "unknown_event_type"),
    (b'{"event_id": "h5", "user_id": "u-x", "type": "browse", "ts": 0, "category": "c"}',
     "bad_timestamp"),
    (b'{"event_id": "h6", "user_id": "u-x", "type": "browse", '
     b'"ts": "2100-01-01T00:00:00Z", "category": "c"}', "bad_timestamp"),
    (b'{"event_id": "h7", "user_id": "u-x", "type": "purchase", "ts": 1764400000000, '
     b'"item_id": "i", "quantity": 1000000000000}', "bad_value"),
    # Beyond 64 bits the JSON parser yields a float: not an integer quantity.
    (b'{"event_id": "h8", "user_id": "u-x", "type": "purchase", "ts": 1764400000000, '
     b'"item_id": "i", "quantity": 100000000000000000000}', "bad_type"),
    (b'{"pad": "' + b"x" * 70_000 + b'"}', "too_large"),
]


def test_hostile_records_go_to_the_dead_letter_topic_and_good_ones_keep_flowing(
        settings_for, make_topics, tiny_bundle, log_events, tmp_path):
    settings = settings_for(bundle_path=tiny_bundle)
    make_topics(settings)
    good = log_events[:300]
    records = []
    for i, event in enumerate(good):
        records.append((event["user_id"], orjson.dumps(event)))
        if i % 20 == 0:
            value, _ = HOSTILE[(i // 20) % len(HOSTILE)]
            records.append(("u-hostile", value))
    n_bad = len(records) - len(good)
    produce(settings, settings.events_topic, records)
    with WorkerProcess(settings, tmp_path / "worker.log") as worker:
        predictions = consume(settings, settings.predictions_topic, count=len(good), timeout=120)
        letters = json_values(consume(settings, settings.dlq_topic, count=n_bad, timeout=60))
        worker.assert_alive()
    assert {json.loads(p.value)["event_id"] for p in predictions} == {e["event_id"] for e in good}
    expected = Counter(HOSTILE[(i // 20) % len(HOSTILE)][1] for i in range(0, len(good), 20))
    assert Counter(letter["reason"] for letter in letters) == expected
    schema = json.loads((SCHEMAS / "dead_letter.v1.json").read_text())
    for letter in letters:
        jsonschema.validate(letter, schema)
        assert letter["source"]["topic"] == settings.events_topic
        assert letter["source"]["offset"] >= 0 and letter["message"]


def test_events_not_keyed_by_user_are_rekeyed_and_windowed_per_user(
        settings_for, make_topics, tiny_bundle, log_events, tmp_path):
    settings = settings_for(bundle_path=tiny_bundle)
    make_topics(settings)
    events = log_events[:200]
    # Half the producers key by session, the other half send no key at all.
    records = [(e["session_id"] if i % 2 else None, orjson.dumps(e))
               for i, e in enumerate(events)]
    produce(settings, settings.events_topic, records)
    with WorkerProcess(settings, tmp_path / "worker.log"):
        predictions = consume(settings, settings.predictions_topic, count=len(events),
                              timeout=120)
    assert sorted(json.loads(p.value)["event_id"] for p in predictions) == \
        sorted(e["event_id"] for e in events)
    assert all(p.key == json.loads(p.value)["user_id"].encode() for p in predictions)


def strip_volatile(record):
    prediction = json.loads(record.value)
    del prediction["scored_at"]
    return prediction


def assert_same_predictions(got, expected):
    assert got.keys() == expected.keys()
    for event_id, prediction in got.items():
        reference = expected[event_id]
        assert [i["item_id"] for i in prediction["next_items"][:5]] == \
            [i["item_id"] for i in reference["next_items"][:5]], event_id
        for action, p in prediction["next_action"].items():
            assert p == pytest.approx(reference["next_action"][action], abs=1e-5)
        assert prediction["purchase_probability"] == pytest.approx(
            reference["purchase_probability"], abs=1e-5)


def test_a_restarted_worker_recovers_windows_from_the_changelog(
        settings_for, make_topics, tiny_bundle, log_events, tmp_path, unique_id):
    """Stop a worker halfway; its successor's predictions equal an uninterrupted run's."""
    events = log_events[:800]
    first, second = events[:400], events[400:]
    # Reference: one worker that never stops, on its own app id and topics.
    ref = f"{unique_id}-ref"
    reference = settings_for(bundle_path=tiny_bundle, app_id=ref,
                             events_topic=f"{ref}.events", predictions_topic=f"{ref}.predictions",
                             dlq_topic=f"{ref}.dlq", erasure_topic=f"{ref}.erasure",
                             audit_topic=f"{ref}.audit")
    make_topics(reference)
    produce(reference, reference.events_topic, keyed(events))
    with WorkerProcess(reference, tmp_path / "reference.log"):
        expected = {json.loads(r.value)["event_id"]: strip_volatile(r) for r in consume(
            reference, reference.predictions_topic, count=len(events), timeout=120)}

    settings = settings_for(bundle_path=tiny_bundle)
    make_topics(settings)
    produce(settings, settings.events_topic, keyed(first))
    with WorkerProcess(settings, tmp_path / "first.log"):
        consume(settings, settings.predictions_topic, count=len(first), timeout=120)
    produce(settings, settings.events_topic, keyed(second))
    # A new process with empty memory: windows can only come from the changelog.
    with WorkerProcess(settings, tmp_path / "second.log"):
        records = consume(settings, settings.predictions_topic, count=len(events), timeout=120)
    got = {}
    for record in records:
        prediction = strip_volatile(record)
        got.setdefault(prediction["event_id"], prediction)
    assert_same_predictions({k: got[k] for k in (e["event_id"] for e in second)},
                            {k: expected[k] for k in (e["event_id"] for e in second)})


def test_a_worker_stopped_mid_stream_exits_and_its_successor_loses_nothing(
        settings_for, make_topics, tiny_bundle, log_events, tmp_path):
    """SIGTERM while events arrive: the worker exits on its own, nothing is lost.

    A stop used to cancel a batch mid-way and then wait forever for its acks
    (Faust's wait_empty), so the worker never exited (streams/bulk_consumer.py). The
    rate keeps the worker busy, so the stop lands inside a batch.
    """
    events = log_events[:3000]
    log = tmp_path / "events.jsonl"
    log.write_bytes(b"".join(orjson.dumps(e) + b"\n" for e in events))
    settings = settings_for(bundle_path=tiny_bundle)
    make_topics(settings)
    env = {**os.environ, **settings.to_environment()}
    with WorkerProcess(settings, tmp_path / "first.log") as worker:
        replay = subprocess.Popen(  # noqa: S603 - our own CLI, a steady trickle of events
            [sys.executable, "-m", "streams.cli", "replay", str(log), "--rate", "1000", "--quiet"],
            cwd=REPO, env=env)
        consume(settings, settings.predictions_topic, count=500, timeout=120, strict=False)
        code = worker.stop(timeout=90)
        assert code != -signal.SIGKILL, "the worker did not exit on SIGTERM:\n" + worker.log_tail()
        assert replay.wait(120) == 0
    wanted = {e["event_id"] for e in events}

    def predicted() -> set[str]:
        return {json.loads(r.value)["event_id"] for r in consume(
            settings, settings.predictions_topic, timeout=5, strict=False)}

    with WorkerProcess(settings, tmp_path / "second.log"):
        # Redeliveries repeat some predictions: wait for every event id, not a count.
        wait_for(lambda: wanted <= predicted(), timeout=180, interval=2,
                 message="a prediction for every event")
    assert predicted() == wanted
