"""Properties of the validator (streams/contracts.py) and the encoding of windows
(streams/encoding.py, streams/window.py), checked by hypothesis on generated input.

Whatever bytes or JSON arrive, decoding returns an event or a rejection with a known reason
and never raises; valid events survive a round trip; dead letters are always valid Dead
letter v1; and a window, however events arrive (redelivered, out of order, after long
pauses), keeps its invariants and equals what training's ``encode_history`` computes.
"""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import numpy as np
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streams.contracts import (
    ACTIONS,
    MAX_DEAD_LETTER_ORIGINAL,
    REASONS,
    DeadLetter,
    Event,
    Rejection,
    decode_event,
)
from streams.encoding import GAP_FIRST, Encoder, EncodingSpec, Vocabulary, event_hash
from streams.privacy import scrub_query
from streams.window import HEADER_BYTES, UserWindow, encode_history, window_header
from tests.hostile_corpus import all_cases

NOW = 1_764_400_000_000
DAY_MS = 86_400_000
SCHEMA = json.loads((Path(__file__).parents[2] / "streams" / "schemas" /
                     "dead_letter.v1.json").read_text())
# No example database: it would be written into the working tree.
quick = settings(max_examples=100, deadline=None, database=None,
                 suppress_health_check=[HealthCheck.too_slow])

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=40),
    lambda children: st.lists(children, max_size=6)
    | st.dictionaries(st.text(max_size=12), children, max_size=6),
    max_leaves=25)

ids = st.text(min_size=1, max_size=128)
timestamps = st.integers(NOW - 400 * DAY_MS, NOW)
ITEMS = [f"sku-{i}" for i in range(20)]


@st.composite
def valid_events(draw) -> dict:
    """An Event v1 object the contract accepts."""
    kind = draw(st.sampled_from(ACTIONS))
    event = {"event_id": draw(ids), "user_id": draw(ids), "type": kind, "ts": draw(timestamps)}
    if kind in ("click", "add_to_cart", "purchase") or draw(st.booleans()):
        event["item_id"] = draw(st.sampled_from(ITEMS) | ids)
    if kind == "browse" and "item_id" not in event or draw(st.booleans()):
        event["category"] = draw(ids)
    if kind == "search":
        # Some search text must remain after scrubbing: a blank query is a dead letter.
        event["query"] = draw(st.text(min_size=1, max_size=512).filter(scrub_query))
    if draw(st.booleans()):
        event["price"] = draw(st.floats(0, 1e12, allow_nan=False))
    if draw(st.booleans()):
        event["quantity"] = draw(st.integers(1, 1_000_000))
    if draw(st.booleans()):
        event["extra"] = draw(json_values)  # unknown fields are ignored
    return event


def dumps(value: object) -> bytes:
    """JSON bytes; the standard library's encoder also takes integers beyond 64 bits."""
    return json.dumps(value, ensure_ascii=False).encode("utf-8")


def assert_outcome(result: Event | Rejection) -> None:
    assert isinstance(result, Event | Rejection)
    if isinstance(result, Rejection):
        assert result.reason in REASONS and result.message


@quick
@given(st.binary(max_size=3000))
def test_any_bytes_decode_to_an_event_or_a_known_rejection(raw):
    assert_outcome(decode_event(raw, now_ms=NOW))


@quick
@given(json_values)
def test_any_json_decodes_to_an_event_or_a_known_rejection(value):
    assert_outcome(decode_event(dumps(value), now_ms=NOW))


@quick
@given(valid_events(), st.sampled_from(["event_id", "user_id", "type", "ts", "item_id",
                                        "category", "query", "price", "quantity",
                                        "session_id"]), json_values)
def test_a_valid_event_with_any_field_replaced_never_raises(event, field, value):
    assert_outcome(decode_event(dumps({**event, field: value}), now_ms=NOW))


@pytest.mark.parametrize("case", all_cases(huge=True), ids=lambda c: c.name)
def test_each_record_of_the_hostile_corpus_is_rejected_for_its_reason_or_accepted(case):
    result = decode_event(case.value, now_ms=NOW)
    if case.outcome == "dlq":
        assert isinstance(result, Rejection) and result.reason == case.reason, result
    else:
        assert isinstance(result, Event) and result.event_id == case.event_id, result


@quick
@given(st.sampled_from(all_cases()), st.binary(max_size=64))
def test_the_hostile_corpus_with_noise_never_raises(case, noise):
    for raw in (case.value, (case.value or b"") + noise, noise + (case.value or b"")):
        assert_outcome(decode_event(raw, now_ms=NOW))


@quick
@given(valid_events())
def test_valid_events_are_accepted_and_round_trip(obj):
    event = decode_event(dumps(obj), now_ms=NOW)
    assert isinstance(event, Event), event
    assert event.ts_ms == obj["ts"] and event.user_id == obj["user_id"]
    # Its v1 form decodes to the same event (the query is already scrubbed).
    assert decode_event(orjson.dumps(event.to_dict()), now_ms=NOW) == event


@quick
@given(st.text(max_size=600))
def test_scrubbing_is_idempotent_and_leaves_no_control_characters(text):
    once = scrub_query(text)
    assert scrub_query(once) == once
    assert not any(ch in once for ch in "\x00\x1b\x7f\u200b\u2028")


@quick
@given(st.none() | st.binary(max_size=MAX_DEAD_LETTER_ORIGINAL + 100),
       st.none() | st.binary(max_size=40), st.sampled_from(sorted(REASONS)))
def test_dead_letters_are_always_valid_dead_letter_v1(original, key, reason):
    letter = DeadLetter(original, reason, "why", "shop.events", 3, 17, NOW, key=key)
    obj = orjson.loads(letter.to_json())
    jsonschema.validate(obj, SCHEMA)
    assert obj["original_size"] == len(original or b"")
    assert obj["original_truncated"] == (len(original or b"") > MAX_DEAD_LETTER_ORIGINAL)


# --- windows -----------------------------------------------------------------------------------

SPEC = EncodingSpec(max_len=12)
ENCODER = Encoder(SPEC, Vocabulary(ITEMS[:10]), Vocabulary(["c-a", "c-b"]))


@st.composite
def user_histories(draw) -> list[Event]:
    """One user's events as they might arrive: gaps from seconds to weeks, some out of order,
    some redelivered."""
    events: list[Event] = []
    ts = NOW - 200 * DAY_MS
    for n in range(draw(st.integers(0, 60))):
        if events and draw(st.integers(0, 9)) == 0:
            events.append(draw(st.sampled_from(events)))  # a redelivery
            continue
        ts += draw(st.sampled_from([0, 1, 30, 600, 7200, 3 * 86400, 40 * 86400])) * 1000
        late = draw(st.integers(0, 9)) == 0
        kind = draw(st.sampled_from(ACTIONS))
        events.append(Event(
            event_id=f"e-{n}", user_id="u", type=kind,
            ts_ms=ts - (draw(st.integers(1, 50_000)) if late else 0),
            item_id=draw(st.sampled_from(ITEMS)) if kind != "search" else None,
            category=draw(st.sampled_from(["c-a", "c-b", None])),
            query=draw(st.sampled_from(["red mug", "lamp", "x"])) if kind == "search" else None))
    return events


@quick
@given(user_histories(), st.integers(1, SPEC.max_len))
def test_window_invariants_hold_however_events_arrive(events, max_len):
    ttl = 30 * DAY_MS
    window = UserWindow.empty(ENCODER)
    admitted: list[Event] = []
    for event in events:
        h = event_hash(event.event_id)
        if window.position_of(h) is not None:
            continue  # a redelivery: scored on the prefix, not added again
        window = window.append(event, ENCODER, now_ms=NOW, ttl_ms=ttl, max_len=max_len)
        admitted.append(event)
        stored = window.to_bytes()
        again = UserWindow.from_bytes(stored, ENCODER)
        assert again.body == window.body and again.last_ts_ms == window.last_ts_ms
        assert len(stored) == HEADER_BYTES + len(window) * ENCODER.itemsize
        assert window_header(stored).count == len(window) <= max_len
        records = window.records
        assert int(records["event"][-1]) == h
        assert window.position_of(h) == len(window) - 1
        assert set(records["action"].tolist()) <= set(range(1, len(ACTIONS) + 1))
        assert (records["gap"] >= GAP_FIRST).all()
        assert window.vocab_tag == ENCODER.vocab_tag
    if admitted:
        # Serving's window is the tail of the last segment training computes for the same
        # events: the model is served the inputs it was trained on.
        segments = encode_history(admitted, ENCODER, ttl)
        assert np.array_equal(segments[-1][-max_len:], window.records)
        assert window.last_ts_ms == max(e.ts_ms for e in admitted[-len(segments[-1]):])


@quick
@given(user_histories())
def test_packing_and_the_numpy_encoding_agree(events):
    previous = None
    for event in events:
        packed = np.frombuffer(ENCODER.pack(event, previous), dtype=ENCODER.dtype)[0]
        assert packed.tobytes() == ENCODER.encode(event, previous).tobytes()
        previous = event.ts_ms
