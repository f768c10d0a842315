"""Data preparation: the split by time, nothing from the future in training, serving parity."""

import copy

import numpy as np
import orjson
import pytest

from model_export.data import (
    IGNORE,
    EventLog,
    held_out_cases,
    prepare,
    purchase_label,
    read_events,
    training_chunks,
)
from streams.contracts import event_from_dict
from streams.encoding import UNKNOWN, EncodingSpec
from streams.window import UserWindow
from tests.toy_shop import toy_events

SPEC = EncodingSpec(max_len=8)
HOUR = 3600 * 1000
FAR = 4_102_444_800_000


def as_log(dicts):
    return EventLog([event_from_dict(d, now_ms=FAR) for d in dicts], "0" * 64, len(dicts))


def ev(user, n, ts, kind="click", item=None):
    d = {"event_id": f"{user}-{n}", "user_id": user, "type": kind, "ts": ts}
    if kind != "search":
        d["item_id"] = item or f"sku-{n}"
    else:
        d["query"] = "red shoes"
    return d


def test_reads_jsonl_gzip_and_parquet_and_counts_rejections(tmp_path):
    import gzip

    import pyarrow as pa
    import pyarrow.parquet as pq

    dicts = [ev("u", i, 1_764_000_000_000 + i) for i in range(5)]
    lines = [orjson.dumps(d) for d in dicts] + [b'{"type": "teleport"}', b"not json"]
    (tmp_path / "a.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    with gzip.open(tmp_path / "a.jsonl.gz", "wb") as fh:
        fh.write(b"\n".join(lines))
    pq.write_table(pa.Table.from_pylist(dicts), tmp_path / "a.parquet")
    for name in ("a.jsonl", "a.jsonl.gz"):
        log = read_events(tmp_path / name)
        assert len(log.events) == 5 and log.lines == 7
        assert log.rejected == {"missing_field": 1, "not_json": 1}
    assert len(read_events(tmp_path / "a.parquet").events) == 5


def test_last_event_is_test_and_the_one_before_is_validation():
    dicts = [ev("u", i, 1_764_000_000_000 + i * 60_000) for i in range(6)]
    data = prepare(as_log(dicts), SPEC)
    (test,) = held_out_cases(data, "test")
    (val,) = held_out_cases(data, "validation")
    assert test.user.events[test.t + 1].event_id == "u-5" and test.t == 4
    assert val.user.events[val.t + 1].event_id == "u-4" and val.t == 3
    assert data.users[0].n_train == 4
    # Vocabularies come from training events only: the test and validation items are unknown.
    assert test.next_item == UNKNOWN and val.next_item == UNKNOWN
    assert data.items.index("sku-3") != UNKNOWN


def test_training_data_never_depends_on_validation_or_test_events():
    events = toy_events(users=40, items=24, seed=3)
    changed = copy.deepcopy(events)
    by_user = {}
    for e in changed:
        by_user.setdefault(e["user_id"], []).append(e)
    for user_events in by_user.values():
        if len(user_events) >= 3:
            for e in user_events[-2:]:  # rewrite the future completely
                e.update(type="purchase", item_id="sku-from-the-future", ts=e["ts"] + 1)
    a, b = prepare(as_log(events), SPEC), prepare(as_log(changed), SPEC)
    assert a.items.tokens == b.items.tokens and a.categories.tokens == b.categories.tokens
    assert "sku-from-the-future" not in b.items.tokens
    ca, cb = training_chunks(a), training_chunks(b)
    for key in ca.inputs:
        assert np.array_equal(ca.inputs[key], cb.inputs[key])
    assert np.array_equal(ca.next_item, cb.next_item)
    assert np.array_equal(ca.next_action, cb.next_action)
    assert np.array_equal(ca.purchase, cb.purchase)
    assert np.array_equal(ca.log_seconds, cb.log_seconds, equal_nan=True)


def test_training_targets_cover_every_training_transition_once():
    dicts = [ev("u", i, 1_764_000_000_000 + i * 60_000) for i in range(21)]
    data = prepare(as_log(dicts), SPEC)
    chunks = training_chunks(data)
    # 19 training events give 18 (input, next) pairs, in sequences of at most 8.
    assert (chunks.next_action != IGNORE).sum() == 18
    assert chunks.inputs["actions"].shape[1] == 8
    targets = sorted(chunks.next_item[chunks.next_item != IGNORE].tolist())
    assert targets == sorted(data.items.index(f"sku-{i}") for i in range(1, 19))


def test_windows_are_what_a_worker_holds_even_across_a_ttl_reset():
    ts = [0, 1, 2, 3, 24 * 40, 24 * 40 + 1, 24 * 40 + 2, 24 * 40 + 5, 24 * 40 + 6, 24 * 40 + 7,
          24 * 40 + 9, 24 * 40 + 10, 24 * 40 + 11, 24 * 40 + 12]
    dicts = [ev("u", i, 1_764_000_000_000 + h * HOUR) for i, h in enumerate(ts)]
    data = prepare(as_log(dicts), SPEC, ttl_seconds=30 * 24 * 3600)
    user = data.users[0]
    window = UserWindow.empty(data.encoder)
    for t, event in enumerate(user.events):
        window = window.append(event, data.encoder, now_ms=event.ts_ms, ttl_ms=data.ttl_ms)
        assert window.records.tobytes() == user.window(t, SPEC.max_len).tobytes()
    # No training sequence mixes events from both sides of the 40-day gap.
    chunks = training_chunks(data)
    for row in chunks.inputs["gaps"]:
        real = row[row > 0].tolist()
        assert 1 not in real[1:], "a window reset (gap bucket 1) only ever starts a sequence"


def test_purchase_labels_look_only_inside_the_horizon_and_are_censored_at_the_split():
    start = 1_764_000_000_000
    dicts = [ev("u", 0, start), ev("u", 1, start + 2 * HOUR, "add_to_cart"),
             ev("u", 2, start + 5 * HOUR, "purchase"), ev("u", 3, start + 40 * HOUR),
             ev("u", 4, start + 41 * HOUR), ev("u", 5, start + 42 * HOUR, "purchase"),
             ev("u", 6, start + 43 * HOUR)]
    data = prepare(as_log(dicts), SPEC, horizon_seconds=24 * 3600)
    user = data.users[0]  # train = events 0..4, validation = 5, test = 6
    assert purchase_label(user, 0, user.n_train, data.horizon_ms, censor=True) == 1
    assert purchase_label(user, 2, user.n_train, data.horizon_ms, censor=True) == 0
    # Event 3's horizon reaches into validation, where the purchase is: unknown in training.
    assert purchase_label(user, 3, user.n_train, data.horizon_ms, censor=True) == IGNORE
    (val,) = held_out_cases(data, "validation")
    assert val.purchase == 1 and val.seconds == pytest.approx(3600)
    (test,) = held_out_cases(data, "test")
    assert test.purchase == 0
