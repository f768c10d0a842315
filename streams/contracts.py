"""The wire contracts, declared once: Event v1, Prediction v1 and DeadLetter v1.

Validation never raises on bad input: :func:`decode_event` returns either an
:class:`Event` or a :class:`Rejection` naming a stable reason code, and the
caller turns a rejection into a :class:`DeadLetter`. JSON Schemas of the same
contracts ship in ``streams/schemas/`` for producers and consumers.
"""

from __future__ import annotations

import base64
import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson

from streams.privacy import scrub_query

ACTIONS: tuple[str, ...] = ("browse", "search", "click", "add_to_cart", "purchase")
"""Event types in the order the model's action head uses."""

ACTION_INDEX: dict[str, int] = {name: i for i, name in enumerate(ACTIONS)}

MAX_EVENT_BYTES = 64 * 1024
# A dead letter keeps at most this much of the rejected value: a 10 MB record must not
# become a 10 MB dead letter (which the producer would refuse, stopping the worker).
MAX_DEAD_LETTER_ORIGINAL = MAX_EVENT_BYTES
MAX_ID_CHARS = 128
MAX_ID_BYTES = 4 * MAX_ID_CHARS  # a dead letter keeps at most this much of a record's key
MAX_QUERY_CHARS = 512
MAX_PRICE = 1e12
MAX_QUANTITY = 1_000_000
# Event time must fall between these; anything else is a producer bug.
MIN_TS_MS = 946_684_800_000  # 2000-01-01T00:00:00Z
DEFAULT_MAX_FUTURE_MS = 24 * 3600 * 1000

NEEDS_ITEM = frozenset({"click", "add_to_cart", "purchase"})

# Stable reason codes for dead letters. Codes never change meaning; new ones may be added.
REASONS: dict[str, str] = {
    "too_large": "the record is larger than 64 KiB",
    "empty": "the record has no value (a tombstone or an empty message)",
    "bad_encoding": "the record is not valid UTF-8",
    "not_json": "the record is not valid JSON",
    "not_object": "the record is JSON but not an object",
    "missing_field": "a required field is missing",
    "bad_type": "a field has the wrong JSON type",
    "bad_value": "a field's value is out of its allowed range",
    "unknown_event_type": "the event type is not one of " + ", ".join(ACTIONS),
    "bad_timestamp": "the timestamp is unparseable or implausible",
    "scoring_failed": "the event was valid but the model failed on its batch (see worker logs)",
}


@dataclass(frozen=True, slots=True)
class Event:
    """A valid shop event. ``query`` is already scrubbed of personal data."""

    event_id: str
    user_id: str
    type: str
    ts_ms: int
    item_id: str | None = None
    category: str | None = None
    query: str | None = None
    price: float | None = None
    quantity: int | None = None
    session_id: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """The event as a v1 JSON object (epoch-millisecond ``ts``, no empty fields)."""
        out: dict[str, Any] = {
            "event_id": self.event_id,
            "user_id": self.user_id,
            "type": self.type,
            "ts": self.ts_ms,
        }
        for name in ("item_id", "category", "query", "price", "quantity", "session_id"):
            value = getattr(self, name)
            if value is not None:
                out[name] = value
        return out


@dataclass(frozen=True, slots=True)
class Rejection:
    """Why a record is not a valid event: a stable ``reason`` code and a message for people."""

    reason: str
    message: str


class _Invalid(Exception):
    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.rejection = Rejection(reason, message)


def decode_event(raw: bytes | None, *, now_ms: int, max_future_ms: int = DEFAULT_MAX_FUTURE_MS
                 ) -> Event | Rejection:
    """Decode and validate one record value against the Event v1 contract.

    Returns the event, or a rejection with a reason code from :data:`REASONS`.
    Never raises for bad input.
    """
    if raw is None or len(raw) == 0:
        return Rejection("empty", REASONS["empty"])
    if len(raw) > MAX_EVENT_BYTES:
        return Rejection("too_large", f"the record has {len(raw)} bytes; the limit is "
                         f"{MAX_EVENT_BYTES}")
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        try:
            raw.decode("utf-8")
        except UnicodeDecodeError as utf:
            return Rejection("bad_encoding", f"not valid UTF-8 at byte {utf.start}")
        return Rejection("not_json", f"not valid JSON: {exc}")
    if not isinstance(obj, dict):
        return Rejection("not_object", f"expected a JSON object, got {type(obj).__name__}")
    try:
        return event_from_dict(obj, now_ms=now_ms, max_future_ms=max_future_ms)
    except _Invalid as invalid:
        return invalid.rejection


def event_from_dict(obj: dict[str, Any], *, now_ms: int,
                    max_future_ms: int = DEFAULT_MAX_FUTURE_MS) -> Event:
    """Validate a decoded JSON object; raises ``_Invalid`` (internal) on a broken rule."""
    event_id = _text(obj, "event_id", required=True, limit=MAX_ID_CHARS)
    user_id = _text(obj, "user_id", required=True, limit=MAX_ID_CHARS)
    kind = _text(obj, "type", required=True, limit=64)
    if kind not in ACTION_INDEX:
        raise _Invalid("unknown_event_type", f"type {kind[:64]!r} is not one of "
                       + ", ".join(ACTIONS))
    if "ts" not in obj:
        raise _Invalid("missing_field", "field 'ts' is required")
    ts_ms = parse_ts(obj["ts"])
    if not MIN_TS_MS <= ts_ms <= now_ms + max_future_ms:
        raise _Invalid("bad_timestamp", f"ts {obj['ts']!r} is outside 2000-01-01 .. now + "
                       f"{max_future_ms // 1000} s")
    item_id = _text(obj, "item_id", required=kind in NEEDS_ITEM, limit=MAX_ID_CHARS)
    category = _text(obj, "category", required=False, limit=MAX_ID_CHARS)
    if kind == "browse" and item_id is None and category is None:
        raise _Invalid("missing_field", "a browse event needs 'item_id' or 'category'")
    query = _text(obj, "query", required=kind == "search", limit=MAX_QUERY_CHARS)
    if query is not None:
        query = scrub_query(query) or None
        # Only control characters and spaces: no search text at all. An event keeping it as
        # "" would not pass this validation again in its own v1 form (Event.to_dict).
        if query is None and kind == "search":
            raise _Invalid("bad_value", "field 'query' is blank once control characters and "
                           "white space are removed")
    price = _number(obj, "price")
    quantity = _quantity(obj)
    session_id = _text(obj, "session_id", required=False, limit=MAX_ID_CHARS)
    return Event(
        event_id=event_id, user_id=user_id, type=kind, ts_ms=ts_ms, item_id=item_id,
        category=category, query=query,
        price=price, quantity=quantity, session_id=session_id,
    )


def parse_ts(value: Any) -> int:
    """Event time as epoch milliseconds, from an integer or an RFC 3339 string."""
    if isinstance(value, bool):
        raise _Invalid("bad_type", "ts must be an RFC 3339 string or integer epoch milliseconds")
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
        except ValueError:
            raise _Invalid("bad_timestamp", f"ts {value[:64]!r} is not an RFC 3339 "
                           "timestamp") from None
        if parsed.tzinfo is None:
            raise _Invalid("bad_timestamp", f"ts {value[:64]!r} has no time zone offset")
        return int(parsed.timestamp() * 1000)
    raise _Invalid("bad_type", "ts must be an RFC 3339 string or integer epoch milliseconds, "
                   f"got {type(value).__name__}")


def _text(obj: dict[str, Any], name: str, *, required: bool, limit: int) -> Any:
    value = obj.get(name)
    if value is None:
        if required:
            raise _Invalid("missing_field", f"field {name!r} is required")
        return None
    if not isinstance(value, str):
        raise _Invalid("bad_type", f"field {name!r} must be a string, got "
                       f"{type(value).__name__}")
    if not 1 <= len(value) <= limit:
        raise _Invalid("bad_value", f"field {name!r} must have 1..{limit} characters, has "
                       f"{len(value)}")
    return value


def _number(obj: dict[str, Any], name: str) -> float | None:
    value = obj.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _Invalid("bad_type", f"field {name!r} must be a number, got {type(value).__name__}")
    if not (math.isfinite(value) and 0 <= value <= MAX_PRICE):
        raise _Invalid("bad_value", f"field {name!r} must be a finite number in 0..{MAX_PRICE:g}, "
                       f"got {value!r}"[:200])
    return float(value)


def _quantity(obj: dict[str, Any]) -> int | None:
    value = obj.get("quantity")
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise _Invalid("bad_type", f"field 'quantity' must be an integer, got "
                       f"{type(value).__name__}")
    if not 1 <= value <= MAX_QUANTITY:
        raise _Invalid("bad_value", f"field 'quantity' must be in 1..{MAX_QUANTITY}, got "
                       f"{value}"[:200])
    return value


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A record that broke the Event v1 contract, with enough context to find and fix it."""

    original: bytes | None
    reason: str
    message: str
    topic: str
    partition: int
    offset: int
    rejected_at_ms: int
    key: bytes | None = None

    def to_json(self) -> bytes:
        """Dead letter v1 as UTF-8 JSON bytes (the original cut to its first 64 KiB)."""
        original = self.original
        size = 0 if original is None else len(original)
        if original is not None and size > MAX_DEAD_LETTER_ORIGINAL:
            original = original[:MAX_DEAD_LETTER_ORIGINAL]
        return orjson.dumps({
            "version": 1,
            "reason": self.reason,
            "message": self.message,
            "source": {"topic": self.topic, "partition": self.partition, "offset": self.offset},
            "rejected_at": self.rejected_at_ms,
            **_bytes_field("original", original),
            "original_size": size,
            "original_truncated": size > MAX_DEAD_LETTER_ORIGINAL,
            **_bytes_field("key", self.key[:MAX_ID_BYTES] if self.key else self.key),
        })


def _bytes_field(name: str, data: bytes | None) -> dict[str, Any]:
    if data is None:
        return {name: None, f"{name}_encoding": "none"}
    try:
        return {name: data.decode("utf-8"), f"{name}_encoding": "utf-8"}
    except UnicodeDecodeError:
        return {name: base64.b64encode(data).decode("ascii"), f"{name}_encoding": "base64"}


@dataclass(frozen=True, slots=True)
class ItemScore:
    """One recommended item and the model's probability that the user touches it next."""

    item_id: str
    score: float


@dataclass(frozen=True, slots=True)
class Prediction:
    """Prediction v1: what the model expects this user to do next (the decoded form)."""

    event_id: str
    user_id: str
    event_ts: int
    scored_at: int
    model_version: str
    next_action: dict[str, float]
    next_items: list[ItemScore]
    purchase_probability: float
    next_event_seconds: float

    @classmethod
    def from_json(cls, data: bytes) -> Prediction:
        """Decode a Prediction v1 message, as a subscriber would."""
        obj = orjson.loads(data)
        return cls(
            event_id=obj["event_id"], user_id=obj["user_id"], event_ts=obj["event_ts"],
            scored_at=obj["scored_at"], model_version=obj["model_version"],
            next_action=obj["next_action"],
            next_items=[ItemScore(i["item_id"], i["score"]) for i in obj["next_items"]],
            purchase_probability=obj["purchase_probability"],
            next_event_seconds=obj["next_event_seconds"],
        )


def encode_prediction(event: Event, *, scored_at: int, model_version: str,
                      next_action: list[float], item_ids: Sequence[str],
                      item_scores: Sequence[float], purchase_probability: float,
                      next_event_seconds: float) -> bytes:
    """Prediction v1 as UTF-8 JSON bytes (the hot path: no intermediate objects)."""
    return orjson.dumps({
        "event_id": event.event_id,
        "user_id": event.user_id,
        "event_ts": event.ts_ms,
        "scored_at": scored_at,
        "model_version": model_version,
        "next_action": dict(zip(ACTIONS, next_action, strict=True)),
        "next_items": [{"item_id": i, "score": s}
                       for i, s in zip(item_ids, item_scores, strict=True)],
        "purchase_probability": purchase_probability,
        "next_event_seconds": next_event_seconds,
    })
