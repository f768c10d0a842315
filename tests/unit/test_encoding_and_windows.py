"""Encoding of events into records, and the compact rolling window built from them."""

import numpy as np
import pytest

from streams.contracts import Event
from streams.encoding import (
    GAP_FIRST,
    NONE,
    UNKNOWN,
    Encoder,
    EncodingSpec,
    Vocabulary,
    batch_inputs,
    gap_bucket,
    query_features,
)
from streams.window import HEADER_BYTES, UserWindow, WindowFormatError, encode_history

SPEC = EncodingSpec()
DAY_MS = 24 * 3600 * 1000


@pytest.fixture
def encoder():
    return Encoder(SPEC, Vocabulary(["sku-1", "sku-2"]), Vocabulary(["shoes"]))


def click(n, ts, item="sku-1", user="u-1"):
    return Event(event_id=f"e-{n}", user_id=user, type="click", ts_ms=ts, item_id=item)


def test_vocabulary_reserves_pad_none_unknown():
    vocab = Vocabulary(["a", "b"])
    assert len(vocab) == 5
    assert vocab.index("a") == 3 and vocab.index(None) == NONE and vocab.index("zzz") == UNKNOWN
    assert vocab.token(4) == "b" and vocab.token(UNKNOWN) is None
    assert Vocabulary.from_json(vocab.to_json()).digest() == vocab.digest()
    assert Vocabulary.build(["b", "a", "b", None]).tokens == ["b", "a"]


def test_gap_buckets_are_logarithmic_and_bounded():
    assert gap_bucket(None, SPEC) == GAP_FIRST
    assert gap_bucket(0, SPEC) == 2 and gap_bucket(-5, SPEC) == 2
    assert gap_bucket(1, SPEC) == 3 and gap_bucket(3, SPEC) == 4
    assert gap_bucket(1e12, SPEC) == SPEC.gap_buckets - 1


def test_query_features_ignore_word_order_and_survive_typos():
    a = query_features("wireless headphones", SPEC)
    assert a == query_features("headphones wireless", SPEC)
    assert len(a) == SPEC.query_slots and all(0 < f < SPEC.query_buckets for f in a)
    assert query_features(None, SPEC) == [0] * SPEC.query_slots
    assert query_features("wireles headphones", SPEC) != a  # a typo changes some features...
    assert set(query_features("wireles headphones", SPEC)) & set(a)  # ...but not all


def test_full_window_is_at_most_one_kilobyte(encoder):
    window = UserWindow.empty(encoder)
    for n in range(200):
        event = Event(event_id=f"e-{n}", user_id="u", type="search", ts_ms=n * 1000,
                      query="very long query text with many words")
        window = window.append(event, encoder, now_ms=0, ttl_ms=DAY_MS)
    assert len(window) == SPEC.max_len
    assert len(window.to_bytes()) <= 1024
    assert len(window.to_bytes()) == HEADER_BYTES + SPEC.max_len * encoder.dtype.itemsize


def test_window_round_trips_and_keeps_newest(encoder):
    window = UserWindow.empty(encoder)
    for n in range(60):
        window = window.append(click(n, 1000 * n), encoder, now_ms=5_000, ttl_ms=DAY_MS)
    again = UserWindow.from_bytes(window.to_bytes(), encoder)
    assert np.array_equal(again.records, window.records)
    assert (again.last_ts_ms, again.updated_s) == (59_000, 5)
    assert again.vocab_tag == encoder.vocab_tag
    assert again.position_of(encoder.encode(click(59, 0), None)["event"]) == SPEC.max_len - 1
    assert again.position_of(encoder.encode(click(0, 0), None)["event"]) is None


def test_window_from_other_encoding_is_refused(encoder):
    window = UserWindow.empty(encoder).append(click(1, 0), encoder, now_ms=0, ttl_ms=DAY_MS)
    other = Encoder(EncodingSpec(query_slots=6), encoder.items, encoder.categories)
    with pytest.raises(WindowFormatError, match="another encoding"):
        UserWindow.from_bytes(window.to_bytes(), other)


def test_inactivity_past_ttl_starts_a_fresh_window(encoder):
    window = UserWindow.empty(encoder)
    window = window.append(click(1, 0), encoder, now_ms=0, ttl_ms=DAY_MS)
    window = window.append(click(2, 1000), encoder, now_ms=0, ttl_ms=DAY_MS)
    assert len(window) == 2 and window.records["gap"][1] == gap_bucket(1.0, SPEC)
    window = window.append(click(3, 2 * DAY_MS), encoder, now_ms=0, ttl_ms=DAY_MS)
    assert len(window) == 1 and window.records["gap"][0] == GAP_FIRST
    assert window.expired(now_ms=DAY_MS + 1, ttl_ms=DAY_MS)


def test_encode_history_matches_the_serving_window(encoder):
    events = [click(n, ts) for n, ts in enumerate([0, 500, 400, 10_000, 3 * DAY_MS, 3 * DAY_MS])]
    window = UserWindow.empty(encoder)
    for event in events:
        window = window.append(event, encoder, now_ms=0, ttl_ms=DAY_MS)
    segments = encode_history(events, encoder, ttl_ms=DAY_MS)
    assert [len(s) for s in segments] == [4, 2]
    assert np.array_equal(segments[-1], window.records)


def test_batch_inputs_left_pad_so_the_newest_event_is_last(encoder):
    short = UserWindow.empty(encoder).append(click(1, 0, "sku-2"), encoder, now_ms=0, ttl_ms=DAY_MS)
    long = short.append(click(2, 10, "sku-1"), encoder, now_ms=0, ttl_ms=DAY_MS)
    inputs = batch_inputs([short.records, long.records], SPEC)
    assert inputs["items"].tolist() == [[0, 4], [4, 3]]
    assert inputs["actions"].tolist() == [[0, 3], [3, 3]]
    assert inputs["queries"].shape == (2, 2, SPEC.query_slots)
    assert all(a.dtype == np.int64 for a in inputs.values())


def test_batch_inputs_from_packed_bytes_equal_the_array_path(encoder):
    windows = []
    for n_events in (1, 4, 7):
        window = UserWindow.empty(encoder)
        for n in range(n_events):
            event = Event(event_id=f"e-{n_events}-{n}", user_id="u", type="search",
                          ts_ms=1000 * n, query=f"red shoes {n}")
            window = window.append(event, encoder, now_ms=0, ttl_ms=DAY_MS)
        windows.append(window)
    from_arrays = batch_inputs([w.records for w in windows], SPEC)
    from_bytes = batch_inputs([w.body for w in windows], SPEC)
    for name, array in from_arrays.items():
        np.testing.assert_array_equal(from_bytes[name], array)
        assert from_bytes[name].dtype == np.int64


def test_redelivery_search_ignores_hash_bytes_that_straddle_records(encoder):
    window = UserWindow.empty(encoder)
    for n in range(30):
        window = window.append(click(n, 1000 * n), encoder, now_ms=0, ttl_ms=DAY_MS)
    for n in range(30):
        assert window.position_of(encoder.encode(click(n, 0), None)["event"]) == n
    # A hash made of bytes that sit across two records' fields is not an event id.
    body = window.body
    fake = int.from_bytes(body[10:14], "little")
    if all(fake != int(r["event"]) for r in window.records):
        assert window.position_of(fake) is None
