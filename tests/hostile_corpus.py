"""A corpus of hostile records and what the Event v1 contract says happens to each.

Every record a shop producer could get wrong, or an attacker could send, once: bytes that
are not UTF-8, JSON nested beyond any parser's depth, values far over the 64 KiB limit,
NaN and Infinity, numbers beyond 64 bits, control characters in search text, fields
nobody declared, records without a key or keyed by something else, redeliveries,
out-of-order events and timestamps from 1970 and 2100.

Each :class:`Case` names its expected outcome: ``dlq`` with the dead-letter reason code, or
one of the ways a valid record is handled (``predicted``, ``rekeyed``, ``duplicate``,
``out_of_order``). Used by tests/integration/test_hostile_input.py (through a real worker),
tests/unit/test_contract_properties.py (through the validator) and as the seed corpus of the
fuzzer (tests/fuzz/fuzz_decode.py).
"""

from __future__ import annotations

from dataclasses import dataclass

import orjson

BASE_TS = 1_764_000_000_000  # 2025-11-24, in the past for any test run
TEN_MB = 10 * 1024 * 1024


@dataclass(frozen=True)
class Case:
    """One hostile record: Kafka key and value, and what must become of it."""

    name: str
    key: bytes | None
    value: bytes | None
    outcome: str  # "dlq", "predicted", "rekeyed", "duplicate" or "out_of_order"
    reason: str | None = None  # the dead-letter reason code, for "dlq"
    event_id: str | None = None  # the event id, for valid records


def event(n: int, user: str = "u-hostile", **fields: object) -> dict:
    """A valid click event of ``user``; ``fields`` override or add."""
    base: dict[str, object] = {"event_id": f"h-{n}", "user_id": user, "type": "click",
                               "ts": BASE_TS + n * 1000, "item_id": "sku-1",
                               "category": "c-mug"}
    base.update(fields)
    return base


def _json(obj: object) -> bytes:
    return orjson.dumps(obj)


def _dlq(name: str, value: bytes | None, reason: str, key: bytes | None = b"u-bad") -> Case:
    return Case(name, key, value, "dlq", reason)


def _valid(name: str, obj: dict, outcome: str = "predicted",
           key: bytes | None | str = "user") -> Case:
    raw_key = obj["user_id"].encode() if key == "user" else key  # type: ignore[union-attr]
    return Case(name, raw_key, _json(obj), outcome, event_id=str(obj["event_id"]))  # type: ignore[arg-type]


def dead_letter_cases(*, huge: bool = False) -> list[Case]:
    """Records the contract rejects, each with its reason. ``huge`` adds the 10 MB value."""
    cases = [
        _dlq("not utf-8", b"\xff\xfe\xfd\x00 not text", "bad_encoding"),
        _dlq("not utf-8 inside a JSON string",
             b'{"event_id": "\xc3\x28", "user_id": "u", "type": "click"}', "bad_encoding"),
        _dlq("NaN", b'{"event_id": "n", "user_id": "u", "type": "click", "ts": NaN, '
                    b'"item_id": "i"}', "not_json"),
        _dlq("Infinity price", b'{"event_id": "n", "user_id": "u", "type": "click", '
                               b'"ts": 1764000000000, "item_id": "i", "price": Infinity}',
             "not_json"),
        _dlq("number beyond a double", b'{"event_id": "n", "user_id": "u", "type": "click", '
                                       b'"ts": 1764000000000, "item_id": "i", "price": 1e400}',
             "not_json"),
        _dlq("deeply nested arrays", b"[" * 30_000 + b"]" * 30_000, "not_json"),
        _dlq("deeply nested objects", b'{"a":' * 10_000 + b"1" + b"}" * 10_000, "not_json"),
        _dlq("byte order mark", b"\xef\xbb\xbf" + _json(event(0)), "not_json"),
        _dlq("lone surrogate escape", b'{"event_id": "\\ud800", "user_id": "u"}', "not_json"),
        _dlq("truncated", _json(event(0))[:-7], "not_json"),
        _dlq("a JSON array", b"[1, 2, 3]", "not_object"),
        _dlq("a JSON string", b'"click"', "not_object"),
        _dlq("JSON null", b"null", "not_object"),
        _dlq("empty value", b"", "empty"),
        _dlq("tombstone", None, "empty"),
        _dlq("over 64 KiB", _json({**event(0), "pad": "x" * 70_000}), "too_large"),
        _dlq("no event id", _json({k: v for k, v in event(0).items() if k != "event_id"}),
             "missing_field"),
        _dlq("click without item", _json({k: v for k, v in event(0).items() if k != "item_id"}),
             "missing_field"),
        _dlq("search without query", _json(event(0, type="search")), "missing_field"),
        _dlq("numeric user id", _json(event(0, user_id=12345)), "bad_type"),
        _dlq("quantity beyond 64 bits", b'{"event_id": "q", "user_id": "u", "type": "purchase",'
                                        b' "ts": 1764000000000, "item_id": "i", '
                                        b'"quantity": 100000000000000000000000}', "bad_type"),
        _dlq("boolean timestamp", _json(event(0, ts=True)), "bad_type"),
        _dlq("event id of 129 characters", _json(event(0, event_id="e" * 129)), "bad_value"),
        _dlq("negative price", _json(event(0, price=-0.01)), "bad_value"),
        _dlq("price of 10^13", _json(event(0, price=1e13)), "bad_value"),
        _dlq("zero quantity", _json(event(0, type="purchase", quantity=0)), "bad_value"),
        _dlq("search of only control characters and spaces",
             _json(event(4, type="search", query="\x01\x02 \t", item_id=None)), "bad_value"),
        _dlq("query of 513 characters", _json(event(0, type="search", query="q" * 513)),
             "bad_value"),
        _dlq("unknown event type", _json(event(0, type="levitate")), "unknown_event_type"),
        _dlq("timestamp 1970", _json(event(0, ts=86_400_000)), "bad_timestamp"),
        _dlq("timestamp 0", _json(event(0, ts=0)), "bad_timestamp"),
        _dlq("timestamp 2100", _json(event(0, ts="2100-01-01T00:00:00Z")), "bad_timestamp"),
        _dlq("timestamp 2100 in ms", _json(event(0, ts=4_102_444_800_000)), "bad_timestamp"),
        _dlq("timestamp without zone", _json(event(0, ts="2025-11-24T10:00:00")),
             "bad_timestamp"),
        _dlq("timestamp not a date", _json(event(0, ts="yesterday")), "bad_timestamp"),
        _dlq("negative timestamp", _json(event(0, ts=-1)), "bad_timestamp"),
    ]
    if huge:
        cases.append(_dlq("10 MB value", b'{"pad": "' + b"x" * TEN_MB + b'"}', "too_large"))
    return cases


def valid_cases() -> list[Case]:
    """Records the contract accepts, however odd, and how each is handled."""
    return [
        _valid("unknown fields", event(1, user="u-extra", schema="v2",
                                       tracking={"campaign": ["x", {"deep": [1, 2]}]})),
        _valid("large unknown field under the limit", event(2, user="u-big", notes="n" * 50_000)),
        _valid("control characters in a query",
               event(3, user="u-ctrl", type="search", query="red\x00mug\x1b[31m \u202eevil\x7f",
                     item_id=None)),
        _valid("email and card number in a query", event(
            5, user="u-pii", type="search", query="mug for jo@example.com 4111 1111 1111 1111",
            item_id=None)),
        _valid("no key", event(6, user="u-nokey"), "rekeyed", key=None),
        _valid("key is not the user", event(7, user="u-otherkey"), "rekeyed", key=b"session-7"),
        _valid("RFC 3339 timestamp with offset", event(8, user="u-rfc",
                                                        ts="2025-11-24T17:00:00+02:00")),
    ]


def sequence_cases() -> list[Case]:
    """Records whose handling depends on the ones before them (same user, in this order)."""
    first = event(20, user="u-dup")
    later = event(22, user="u-ooo")
    return [
        _valid("original", first),
        _valid("redelivery of the original", first, "duplicate"),
        _valid("in order", event(21, user="u-ooo")),
        _valid("newer", later),
        # 0.5 s older than the newest event of the window: accepted, with a gap of 0 s.
        _valid("out of order", event(21, user="u-ooo", event_id="h-21b",
                                     ts=BASE_TS + 22 * 1000 - 500), "out_of_order"),
    ]


def all_cases(*, huge: bool = False) -> list[Case]:
    """The whole corpus, in the order tests send it."""
    return dead_letter_cases(huge=huge) + valid_cases() + sequence_cases()
