"""Privacy on a real broker: erasure, scrubbed search text, pseudonymous state."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import orjson
import pytest

from streams.topics import changelog_topic
from tests.integration.conftest import FAST_COMPACTION
from tests.integration.kafka_helpers import consume, produce
from tests.integration.workers import REPO, WorkerProcess

pytestmark = pytest.mark.integration

EMAIL = "jane.doe.1987@example.org"
PHONE = "+44 20 7946 0958"


def user_events(user, n, start_ts, query=None):
    events = []
    for i in range(n):
        kind = "search" if query and i % 3 == 0 else "click"
        event = {"event_id": f"{user}-e{i}", "user_id": user, "type": kind,
                 "ts": start_ts + 60_000 * i, "session_id": f"{user}-s"}
        if kind == "search":
            event["query"] = query
        else:
            event["item_id"] = f"sku-{i % 7}"
        events.append(event)
    return events


def keyed(events):
    return [(e["user_id"], orjson.dumps(e)) for e in events]


def rocksdb_keys(data_dir):
    """Every key in the worker's RocksDB table files (read after the worker stopped)."""
    from rocksdict import AccessType, Rdict

    keys = set()
    for db in data_dir.rglob("windows-*.db"):
        store = Rdict(str(db), access_type=AccessType.read_only())
        try:
            keys.update(bytes(k) for k in store.keys())
        finally:
            store.close()
    return keys


def latest_by_key(records):
    latest = {}
    for record in sorted(records, key=lambda r: (r.partition, r.offset)):
        latest[record.key] = record.value
    return latest


def forget(settings, user):
    env = {**os.environ, **settings.to_environment()}
    result = subprocess.run([sys.executable, "-m", "streams.cli", "forget", user], cwd=REPO,
                            env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_forget_removes_the_window_from_store_and_changelog(
        settings_for, make_topics, kafka_broker, tiny_bundle, tmp_path):
    settings = settings_for(bundle_path=tiny_bundle, store="rocksdb")
    make_topics(settings, changelog_config=FAST_COMPACTION)
    now = int(time.time() * 1000) - 3_600_000
    events = user_events("u-forget", 12, now) + user_events("u-keep", 12, now)
    produce(settings, settings.events_topic, keyed(events))
    with WorkerProcess(settings, tmp_path / "worker.log") as worker:
        consume(settings, settings.predictions_topic, count=len(events), timeout=120)
        out = forget(settings, "u-forget")
        worker.assert_alive()
    assert "deleted" in out
    audit = [json.loads(r.value) for r in consume(settings, settings.audit_topic, count=1)]
    assert audit[0]["window_deleted"] is True and "u-forget" not in json.dumps(audit)

    keys = rocksdb_keys(settings.data_dir)
    assert b"u-keep" in keys and b"u-forget" not in keys
    changelog = consume(settings, changelog_topic(settings), timeout=30)
    latest = latest_by_key(changelog)
    assert latest[b"u-forget"] is None  # the tombstone
    assert latest[b"u-keep"] is not None

    if not kafka_broker.is_apache_kafka:
        pytest.skip("log compaction needs Apache Kafka (tansu does not compact)")
    # More writes to the tombstone's partition roll its segments (a segment rolls only when a
    # record arrives after segment.ms), so the cleaner can compact the tombstoned ones.
    (tombstone,) = [r for r in changelog if r.key == b"u-forget" and r.value is None]
    deadline = time.monotonic() + 120
    while True:
        produce(settings, changelog_topic(settings),
                [(b"filler", b"\x00")], partition=tombstone.partition)
        keys_now = {r.key for r in consume(settings, changelog_topic(settings), timeout=30)}
        if b"u-forget" not in keys_now:
            break
        assert time.monotonic() < deadline, "the changelog was not compacted within 120 s"
        time.sleep(2)
    assert b"u-keep" in keys_now


def test_search_text_with_personal_data_is_stored_nowhere(
        settings_for, make_topics, tiny_bundle, tmp_path):
    settings = settings_for(bundle_path=tiny_bundle, store="rocksdb")
    make_topics(settings)
    now = int(time.time() * 1000) - 3_600_000
    events = user_events("u-pii", 9, now, query=f"mug for {EMAIL} call {PHONE}")
    produce(settings, settings.events_topic, keyed(events))
    log_path = tmp_path / "worker.log"
    with WorkerProcess(settings, log_path, extra_env={"SHOPCAST_LOG_LEVEL": "DEBUG"}):
        predictions = consume(settings, settings.predictions_topic, count=len(events),
                              timeout=120)
    changelog = consume(settings, changelog_topic(settings), timeout=30)
    places = {
        "predictions": b"".join(r.value for r in predictions),
        "changelog": b"".join((r.key or b"") + (r.value or b"") for r in changelog),
        "worker log": log_path.read_bytes(),
        "table files": b"".join(p.read_bytes() for p in settings.data_dir.rglob("*")
                                if p.is_file()),
    }
    # Long enough not to occur by chance (RocksDB's LOG has microsecond timestamps).
    for secret in (EMAIL, PHONE, "7946 0958", "79460958", "example.org", "jane.doe"):
        for place, data in places.items():
            assert secret.encode() not in data, f"{secret!r} found in the {place}"


def test_pseudonymous_state_hides_user_ids_but_predictions_keep_them(
        settings_for, make_topics, tiny_bundle, tmp_path):
    settings = settings_for(bundle_path=tiny_bundle, pseudonym_secret="correct horse")
    make_topics(settings)
    now = int(time.time() * 1000) - 3_600_000
    events = user_events("u-alice", 5, now) + user_events("u-bob", 5, now)
    produce(settings, settings.events_topic, keyed(events))
    with WorkerProcess(settings, tmp_path / "worker.log"):
        predictions = consume(settings, settings.predictions_topic, count=len(events),
                              timeout=120)
        out = forget(settings, "u-alice")
    assert {json.loads(r.value)["user_id"] for r in predictions} == {"u-alice", "u-bob"}
    changelog = consume(settings, changelog_topic(settings), timeout=30)
    assert changelog and all(len(r.key) == 32 for r in changelog)
    assert not any(b"u-alice" in r.key or b"u-bob" in r.key for r in changelog)
    assert "deleted" in out
    assert sum(r.value is None for r in changelog) == 1  # alice's tombstone, under her hash
