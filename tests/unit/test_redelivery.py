"""Redeliveries after a crash: found in the window and scored on exactly the window they had.

A worker that dies re-reads everything since its last commit; the pipeline recognises those
events in their users' windows. With SHOPCAST_MARGIN the stored window keeps that
many records beyond the scored ones, so this holds even when the user made newer events than
the scored window holds (test_crash.py found windows and predictions differing after a fast
replay without it).
"""

from __future__ import annotations

import orjson

from streams.encoding import Encoder, EncodingSpec, Vocabulary
from streams.pipeline import Incoming, Pipeline, Ready
from streams.window import UserWindow

NOW = 1_764_400_000_000
DAY_MS = 86_400_000
MARGIN = 32
ENCODER = Encoder(EncodingSpec(max_len=20), Vocabulary([f"sku-{i}" for i in range(30)]),
                  Vocabulary(["c"]))


def click(n: int) -> Incoming:
    value = orjson.dumps({"event_id": f"e-{n}", "user_id": "u", "type": "click",
                          "ts": NOW - 1_000_000 + n * 1000, "item_id": f"sku-{n % 30}"})
    return Incoming(b"u", value, "events", 0, n)


def test_a_redelivery_after_newer_events_is_scored_on_its_original_window():
    pipeline = Pipeline(ENCODER, window_length=5, ttl_ms=DAY_MS, max_future_ms=DAY_MS,
                        redelivery_margin=MARGIN)
    table: dict[bytes, bytes] = {}
    first = [pipeline.admit(click(n), table, now_ms=NOW) for n in range(45)]
    stored = table[b"u"]
    assert len(UserWindow.from_bytes(stored, ENCODER)) == 5 + MARGIN
    for n in (12, 20, 39, 44):  # 32, 24, 5 and 0 newer events since
        again = pipeline.admit(click(n), table, now_ms=NOW)
        assert isinstance(again, Ready) and again.duplicate
        assert again.records == first[n].records  # the same 5 (or fewer) records
        assert again.window_length == first[n].window_length
    assert table[b"u"] == stored  # not added again


def test_the_model_sees_only_the_newest_window_length_events():
    pipeline = Pipeline(ENCODER, window_length=5, ttl_ms=DAY_MS, max_future_ms=DAY_MS,
                        redelivery_margin=MARGIN)
    table: dict[bytes, bytes] = {}
    for n in range(12):
        out = pipeline.admit(click(n), table, now_ms=NOW)
    assert out.window_length == 5 and len(out.records) == 5 * ENCODER.itemsize
    assert out.records == table[b"u"][-5 * ENCODER.itemsize:]


def test_beyond_the_margin_a_redelivery_counts_as_a_new_event():
    # The documented bound: a user with more than window_length + margin newer events.
    pipeline = Pipeline(ENCODER, window_length=5, ttl_ms=DAY_MS, max_future_ms=DAY_MS,
                        redelivery_margin=MARGIN)
    table: dict[bytes, bytes] = {}
    for n in range(5 + MARGIN + 1):
        pipeline.admit(click(n), table, now_ms=NOW)
    again = pipeline.admit(click(0), table, now_ms=NOW)
    assert isinstance(again, Ready) and not again.duplicate


def test_without_a_margin_a_window_stores_only_what_the_model_scores():
    # The default: a full 50-event window stays within 1 KB.
    encoder = Encoder(EncodingSpec(max_len=50), ENCODER.items, ENCODER.categories)
    pipeline = Pipeline(encoder, window_length=None, ttl_ms=DAY_MS, max_future_ms=DAY_MS)
    table: dict[bytes, bytes] = {}
    for n in range(80):
        pipeline.admit(click(n), table, now_ms=NOW)
    assert len(UserWindow.from_bytes(table[b"u"], encoder)) == 50
    assert len(table[b"u"]) <= 1024
