"""Event v1 validation: every rule of the contract, and dead letters for everything else."""

import base64
import json

import orjson
import pytest

from streams.contracts import DeadLetter, Event, Rejection, decode_event

NOW = 1_764_400_000_000  # 2025-11-29


def good(**overrides):
    event = {"event_id": "e-1", "user_id": "u-1", "type": "click", "ts": NOW - 1000,
             "item_id": "sku-1"}
    event.update(overrides)
    return {k: v for k, v in event.items() if v is not None}


def decode(obj_or_bytes):
    raw = obj_or_bytes if isinstance(obj_or_bytes, bytes) else json.dumps(obj_or_bytes).encode()
    return decode_event(raw, now_ms=NOW)


def reason(obj_or_bytes):
    result = decode(obj_or_bytes)
    assert isinstance(result, Rejection), result
    return result.reason


def test_a_valid_click_decodes():
    event = decode(good())
    assert event == Event(event_id="e-1", user_id="u-1", type="click", ts_ms=NOW - 1000,
                          item_id="sku-1")


def test_rfc3339_timestamps_with_offsets_are_epoch_millis():
    assert decode(good(ts="2025-11-29T07:06:40Z")).ts_ms == 1_764_400_000_000
    assert decode(good(ts="2025-11-29T08:06:40.250+01:00")).ts_ms == 1_764_400_000_250


def test_unknown_fields_are_ignored():
    assert isinstance(decode(good(colour="red", nested={"a": [1, 2]})), Event)


@pytest.mark.parametrize("raw, expected", [
    (b"", "empty"),
    (None, "empty"),
    (b"\xff\xfe\x00garbage", "bad_encoding"),
    (b"{not json", "not_json"),
    (b"[1, 2, 3]", "not_object"),
    (b'"just a string"', "not_object"),
    (b'{"event_id": "e", "user_id": "u", "type": "click", "ts": NaN, "item_id": "i"}', "not_json"),
    (b"[" * 5000 + b"]" * 5000, "not_json"),
    (b"x" * (64 * 1024 + 1), "too_large"),
])
def test_undecodable_records(raw, expected):
    result = decode_event(raw, now_ms=NOW)
    assert isinstance(result, Rejection) and result.reason == expected


@pytest.mark.parametrize("overrides, expected", [
    ({"event_id": None}, "missing_field"),
    ({"user_id": None}, "missing_field"),
    ({"type": None}, "missing_field"),
    ({"ts": None}, "missing_field"),
    ({"item_id": None}, "missing_field"),
    ({"type": "wishlist"}, "unknown_event_type"),
    ({"user_id": 42}, "bad_type"),
    ({"user_id": ""}, "bad_value"),
    ({"user_id": "u" * 129}, "bad_value"),
    ({"ts": True}, "bad_type"),
    ({"ts": 1.5e12}, "bad_type"),
    ({"ts": "yesterday"}, "bad_timestamp"),
    ({"ts": "2025-11-29T07:06:40"}, "bad_timestamp"),
    ({"ts": 0}, "bad_timestamp"),
    ({"ts": "1970-01-01T00:00:00Z"}, "bad_timestamp"),
    ({"ts": "2100-01-01T00:00:00Z"}, "bad_timestamp"),
    ({"ts": 1_764_400_000}, "bad_timestamp"),  # seconds, not milliseconds
    ({"price": -1}, "bad_value"),
    ({"price": "9.99"}, "bad_type"),
    ({"price": 1e300}, "bad_value"),
    ({"quantity": 0}, "bad_value"),
    ({"quantity": 2.5}, "bad_type"),
    ({"quantity": 10**18}, "bad_value"),
])
def test_contract_rules(overrides, expected):
    assert reason(good(**overrides)) == expected


def test_search_needs_a_query_and_browse_needs_item_or_category():
    assert reason(good(type="search", item_id=None)) == "missing_field"
    assert isinstance(decode(good(type="search", item_id=None, query="red shoes")), Event)
    assert reason(good(type="browse", item_id=None)) == "missing_field"
    assert isinstance(decode(good(type="browse", item_id=None, category="shoes")), Event)


def test_queries_are_scrubbed_before_they_reach_the_event():
    event = decode(good(type="search", query="Call me +44 20 7946 0958 or ann@example.com"))
    assert "7946" not in event.query and "example.com" not in event.query
    assert "<phone>" in event.query and "<email>" in event.query


def test_to_dict_round_trips():
    event = decode(good(type="purchase", price=9.5, quantity=2, session_id="s"))
    again = decode(event.to_dict())
    assert again == event


def test_dead_letter_keeps_original_bytes_text_or_base64():
    text = DeadLetter(b'{"a":', "not_json", "bad", "shop.events", 3, 17, NOW, key=b"u-1")
    out = orjson.loads(text.to_json())
    assert out["original"] == '{"a":' and out["original_encoding"] == "utf-8"
    assert out["source"] == {"topic": "shop.events", "partition": 3, "offset": 17}
    assert out["reason"] == "not_json" and out["key"] == "u-1"
    binary = orjson.loads(DeadLetter(b"\xff\x00", "bad_encoding", "x", "t", 0, 0, NOW).to_json())
    assert binary["original_encoding"] == "base64"
    assert base64.b64decode(binary["original"]) == b"\xff\x00"
