"""The per-record logic of the worker, on a plain dict instead of a Faust table."""

import orjson
import pytest

from streams.contracts import DeadLetter
from streams.encoding import Encoder, EncodingSpec, Vocabulary
from streams.pipeline import Incoming, Pipeline, Ready, Rekey
from streams.window import UserWindow

NOW = 1_764_400_000_000
DAY_MS = 86_400_000


@pytest.fixture
def encoder():
    return Encoder(EncodingSpec(), Vocabulary(["sku-1", "sku-2"]), Vocabulary(["shoes"]))


@pytest.fixture
def pipeline(encoder):
    return Pipeline(encoder, window_length=50, ttl_ms=DAY_MS, max_future_ms=DAY_MS,
                    rekey_topic="shop.events.rekeyed")


def record(value, key=b"u-1", partition=2, offset=7, topic="shop.events"):
    raw = value if isinstance(value, bytes) else orjson.dumps(value)
    return Incoming(key, raw, topic, partition, offset)


def click(n, user="u-1", ts=NOW - 10_000):
    return {"event_id": f"e-{n}", "user_id": user, "type": "click", "ts": ts + n,
            "item_id": "sku-1"}


def test_valid_events_grow_the_users_window(pipeline, encoder):
    table = {}
    for n in range(3):
        out = pipeline.admit(record(click(n)), table, now_ms=NOW)
        assert isinstance(out, Ready) and not out.duplicate and out.window_length == n + 1
        assert len(out.records) == (n + 1) * encoder.itemsize
    window = UserWindow.from_bytes(table[b"u-1"], encoder)
    assert len(window) == 3 and window.partition == 2


def test_bad_records_become_dead_letters_with_source(pipeline):
    table = {}
    out = pipeline.admit(record(b"{oops", offset=41), table, now_ms=NOW)
    assert isinstance(out, DeadLetter)
    assert (out.reason, out.topic, out.partition, out.offset) == ("not_json", "shop.events", 2, 41)
    assert out.original == b"{oops" and table == {}


def test_redelivery_is_scored_on_its_original_window_and_not_added_twice(pipeline):
    table = {}
    first = [pipeline.admit(record(click(n)), table, now_ms=NOW) for n in range(3)]
    stored = table[b"u-1"]
    again = pipeline.admit(record(click(1)), table, now_ms=NOW)
    assert isinstance(again, Ready) and again.duplicate
    assert again.records == first[1].records
    assert table[b"u-1"] == stored


def test_records_not_keyed_by_user_are_rekeyed_unchanged(pipeline):
    table = {}
    value = orjson.dumps(click(1))
    out = pipeline.admit(record(value, key=b"session-9"), table, now_ms=NOW)
    assert out == Rekey("u-1", value) and table == {}
    out = pipeline.admit(record(value, key=None), table, now_ms=NOW)
    assert isinstance(out, Rekey)
    # Once on the re-keyed topic the event is windowed, whatever its key.
    out = pipeline.admit(record(value, key=b"u-1", topic="shop.events.rekeyed"), table, now_ms=NOW)
    assert isinstance(out, Ready)


def test_window_length_setting_caps_the_window(encoder):
    short = Pipeline(encoder, window_length=5, ttl_ms=DAY_MS, max_future_ms=DAY_MS)
    table = {}
    for n in range(9):
        out = short.admit(record(click(n)), table, now_ms=NOW)
    assert out.window_length == 5


def test_pseudonymous_keys_hide_user_ids_in_the_table(encoder):
    secret = Pipeline(encoder, window_length=50, ttl_ms=DAY_MS, max_future_ms=DAY_MS,
                      pseudonym_secret=b"k")
    table = {}
    out = secret.admit(record(click(1)), table, now_ms=NOW)
    assert out.event.user_id == "u-1"
    (key,) = table
    assert b"u-1" not in key and len(key) == 32


def test_unreadable_stored_window_starts_afresh(pipeline):
    table = {b"u-1": b"\x09garbage"}
    out = pipeline.admit(record(click(1)), table, now_ms=NOW)
    assert isinstance(out, Ready) and out.window_length == 1
