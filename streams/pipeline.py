"""What happens to one incoming record, without Faust: decode, route, update the window.

The Faust agent (``streams/app.py``) only wires this to Kafka: for each
record it calls :meth:`Pipeline.admit` with the window table, then scores the
batch of admitted events in a thread. Everything here is plain Python over a
``MutableMapping[bytes, bytes]`` (the Faust table in production, a dict in
tests).
"""

from __future__ import annotations

from collections.abc import Callable, MutableMapping
from dataclasses import dataclass

from streams.bundle import BundleError
from streams.contracts import DeadLetter, Event, Rejection, decode_event
from streams.encoding import Encoder, event_hash
from streams.privacy import pseudonymous_key
from streams.window import UserWindow, WindowFormatError


@dataclass(frozen=True, slots=True)
class Incoming:
    """One Kafka record as the pipeline sees it."""

    key: bytes | None
    value: bytes | None
    topic: str
    partition: int
    offset: int
    timestamp_ms: int | None = None


@dataclass(frozen=True, slots=True)
class Ready:
    """A valid event and the window (ending with it) that the model scores."""

    event: Event
    records: bytes  # packed records of the window ending with this event
    duplicate: bool
    window_length: int
    source: Incoming
    item_index: int  # the event's item in the model's vocabulary (for online accuracy)


@dataclass(frozen=True, slots=True)
class Rekey:
    """A valid event whose Kafka key is not its user id: send it on, keyed by user."""

    user_id: str
    value: bytes


Outcome = Ready | DeadLetter | Rekey


class Pipeline:
    """Admits records into users' windows; one instance per worker."""

    def __init__(self, encoder: Encoder, *, window_length: int | None, ttl_ms: int,
                 max_future_ms: int, pseudonym_secret: bytes | None = None,
                 rekey_topic: str | None = None, redelivery_margin: int = 0) -> None:
        if window_length is None:
            window_length = encoder.spec.max_len
        if window_length > encoder.spec.max_len:
            raise BundleError(f"SHOPCAST_WINDOW_LENGTH={window_length} exceeds the bundle's "
                              f"max_len {encoder.spec.max_len}; lower it or unset it")
        self.encoder = encoder
        self.window_length = window_length
        # Records kept per user: the scored window plus a margin of older ones, so that a
        # redelivered event is still found, and scored on exactly the window it first had,
        # after its user made up to ``redelivery_margin`` newer events. After a crash a
        # worker re-reads the seconds of events since its last commit; only a fast replay
        # (or a bot) puts dozens of one user's events in that span. Without a margin such a
        # redelivery is scored on a window that lost its oldest events, or, past
        # window_length newer events, added again. Each record costs 20 bytes per user.
        # A window stores at most 255 records: one byte counts them.
        self.redelivery_margin = redelivery_margin
        self.capacity = min(255, window_length + redelivery_margin)
        self.ttl_ms = ttl_ms
        self.max_future_ms = max_future_ms
        self.secret = pseudonym_secret
        self.rekey_topic = rekey_topic
        # Re-encodes a window stored under another bundle's encoding (set by the hot swap,
        # streams/hot_swap.py); None, or a None result, starts such a window afresh.
        self.foreign: Callable[[bytes], UserWindow | None] | None = None

    def window_key(self, user_id: str) -> bytes:
        """The table key of a user's window (a keyed hash when a secret is set)."""
        return pseudonymous_key(user_id, self.secret)

    def admit(self, record: Incoming, windows: MutableMapping[bytes, bytes], *,
              now_ms: int) -> Outcome:
        """Validate one record and, if it is a valid event, add it to its user's window.

        A redelivered event (same event id already in the window) is not added
        again; it is scored on the window as it was when the event entered, so
        its prediction repeats the original one.
        """
        result = decode_event(record.value, now_ms=now_ms, max_future_ms=self.max_future_ms)
        if isinstance(result, Rejection):
            return DeadLetter(record.value, result.reason, result.message, record.topic,
                              record.partition, record.offset, now_ms, key=record.key)
        event = result
        if (self.rekey_topic is not None and record.topic != self.rekey_topic
                and record.key != event.user_id.encode("utf-8")):
            assert record.value is not None
            return Rekey(event.user_id, record.value)
        key = self.window_key(event.user_id)
        window = self._load(windows, key)
        position = window.position_of(event_hash(event.event_id))
        if position is not None:
            records = self._scored(window.prefix(position))
            return Ready(event, records, duplicate=True,
                         window_length=len(records) // self.encoder.itemsize, source=record,
                         item_index=self.encoder.items.index(event.item_id))
        window = window.append(event, self.encoder, now_ms=now_ms, ttl_ms=self.ttl_ms,
                               max_len=self.capacity, partition=record.partition)
        windows[key] = window.to_bytes()
        records = self._scored(window.body)
        return Ready(event, records, duplicate=False,
                     window_length=len(records) // self.encoder.itemsize, source=record,
                     item_index=self.encoder.items.index(event.item_id))

    def _scored(self, body: bytes) -> bytes:
        """The newest ``window_length`` records of a window's (or a prefix's) records."""
        return body[-self.window_length * self.encoder.itemsize:]

    def _load(self, windows: MutableMapping[bytes, bytes], key: bytes) -> UserWindow:
        stored = windows.get(key)
        if stored is None:
            return UserWindow.empty(self.encoder)
        try:
            window = UserWindow.from_bytes(stored, self.encoder)
        except WindowFormatError:
            window = None
        if window is not None and window.vocab_tag == self.encoder.vocab_tag:
            return window
        # Written under another encoding (a bundle with another vocabulary or spec): its
        # indices mean other items here. Re-encode it if that encoding is known, else
        # start the user afresh rather than feed the model garbage.
        adopted = self.foreign(stored) if self.foreign is not None else None
        return adopted if adopted is not None else UserWindow.empty(self.encoder)
