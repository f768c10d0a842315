"""Replay and capture against a real broker, and replay determinism through fresh workers."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
from collections import defaultdict

import orjson
import pytest

from streams.eventlog import read_log
from tests.integration.kafka_helpers import consume
from tests.integration.workers import REPO, WorkerProcess

pytestmark = pytest.mark.integration


def shopcast(settings, *args, timeout=300):
    env = {**os.environ, **settings.to_environment()}
    result = subprocess.run([sys.executable, "-m", "streams.cli", *map(str, args)], cwd=REPO,
                            env=env, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


@pytest.fixture
def small_log(tiny_log, tmp_path):
    """The first 400 events of the tiny log, gzipped, plus two records that are not events."""
    lines = tiny_log.read_bytes().splitlines()[:400]
    path = tmp_path / "small.jsonl.gz"
    with gzip.open(path, "wb") as fh:
        fh.write(b"\n".join(lines + [b"{broken", b'{"no": "user"}']) + b"\n")
    return path


def test_replay_keys_by_user_and_keeps_each_users_order(settings_for, make_topics, small_log):
    settings = settings_for()
    make_topics(settings)
    out = shopcast(settings, "replay", small_log, "--rate", "2000", "--quiet")
    assert "sent 402 records" in out.stdout and "2 without a user id" in out.stdout
    records = consume(settings, settings.events_topic, count=402, timeout=60)
    per_user = defaultdict(list)
    for record in sorted(records, key=lambda r: (r.partition, r.offset)):
        if record.key is not None:
            event = orjson.loads(record.value)
            assert record.key == event["user_id"].encode()
            per_user[event["user_id"]].append(event["event_id"])
    expected = defaultdict(list)
    for record in read_log(small_log):
        if record.user_id:
            expected[record.user_id].append(orjson.loads(record.value)["event_id"])
    assert per_user == expected


def test_capture_writes_a_replayable_log(settings_for, make_topics, small_log, tmp_path):
    settings = settings_for()
    make_topics(settings)
    shopcast(settings, "replay", small_log, "--max", "--quiet")
    out_file = tmp_path / "captured.jsonl"
    out = shopcast(settings, "capture", settings.events_topic, "--out", out_file,
                   "--from-beginning", "--idle", "3")
    assert "wrote 402 records" in out.stdout and "1 wrapped" in out.stdout
    lines = [json.loads(line) for line in out_file.read_text().splitlines()]
    wrapped = [line for line in lines if "offset" in line]
    assert len(wrapped) == 1 and wrapped[0]["value"] == "{broken"
    sent = sorted(r.value for r in read_log(small_log) if r.value != b"{broken")
    got = sorted(raw for raw, line in zip(out_file.read_bytes().splitlines(), lines)
                 if "offset" not in line)
    assert got == sent  # values come back byte for byte
    limited = tmp_path / "ten.jsonl"
    shopcast(settings, "capture", settings.events_topic, "--out", limited, "--from-beginning",
             "--max", "10")
    assert len(limited.read_text().splitlines()) == 10


def predictions_of_a_fresh_run(settings_for, make_topics, tiny_bundle, log, run, tmp_path):
    settings = settings_for(bundle_path=tiny_bundle, app_id=run, events_topic=f"{run}.events",
                            predictions_topic=f"{run}.predictions", dlq_topic=f"{run}.dlq",
                            erasure_topic=f"{run}.erasure", audit_topic=f"{run}.audit")
    make_topics(settings)
    shopcast(settings, "replay", log, "--max", "--quiet")
    with WorkerProcess(settings, tmp_path / f"worker-{run}.log"):
        records = consume(settings, settings.predictions_topic, count=400, timeout=120)
    out = {}
    for record in records:
        prediction = json.loads(record.value)
        del prediction["scored_at"], prediction["model_version"]
        out[prediction["event_id"]] = prediction
    return out


def test_replaying_a_log_twice_gives_the_same_predictions(settings_for, make_topics,
                                                         tiny_bundle, small_log, tmp_path,
                                                         unique_id):
    first = predictions_of_a_fresh_run(settings_for, make_topics, tiny_bundle, small_log,
                                       f"{unique_id}-run1", tmp_path)
    second = predictions_of_a_fresh_run(settings_for, make_topics, tiny_bundle, small_log,
                                        f"{unique_id}-run2", tmp_path)
    assert len(first) == 400 and first.keys() == second.keys()
    for event_id, prediction in first.items():
        again = second[event_id]
        assert [i["item_id"] for i in prediction["next_items"]] == \
            [i["item_id"] for i in again["next_items"]], event_id
        for key in ("purchase_probability", "next_event_seconds"):
            assert prediction[key] == pytest.approx(again[key], rel=1e-5, abs=1e-6)
        for action, p in prediction["next_action"].items():
            assert p == pytest.approx(again["next_action"][action], abs=1e-6)


def test_retime_moves_the_log_to_now_and_keeps_its_gaps(settings_for, make_topics, small_log):
    import time

    settings = settings_for()
    make_topics(settings)
    started = int(time.time() * 1000)
    shopcast(settings, "replay", small_log, "--max", "--retime", "--quiet")
    got = {e["event_id"]: e["ts"] for e in (orjson.loads(r.value) for r in consume(
        settings, settings.events_topic, count=402, timeout=60) if r.key is not None)}
    original = {e["event_id"]: e["ts"] for e in (orjson.loads(r.value)
                                                 for r in read_log(small_log) if r.user_id)}
    shifts = {got[k] - original[k] for k in original}
    assert len(shifts) == 1  # every event moved by the same amount: gaps kept
    assert started <= max(got.values()) <= int(time.time() * 1000)
