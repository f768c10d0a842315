"""A user's rolling window of recent encoded events, stored as compact bytes.

Layout (little endian): an 18-byte header -- format version (u1), number of
events (u1), the Kafka partition the window lives on (u2), a tag of the
encoding (spec and vocabularies) the records were encoded with (u2), the
event time of the newest event (i8, ms) and the wall-clock second of the last
update (u4) -- followed by the records, oldest first. With the default
encoding a full 50-event window is 1,018 bytes. Bytes, not pickled objects,
so the changelog is safe to read and cheap to ship.

The partition lets the expiry sweep tombstone a window on the right changelog
partition; the encoding tag lets a worker that swaps in a bundle with a new
vocabulary recognise windows encoded under the old one (streams/hot_swap.py).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import numpy as np

from streams.contracts import Event
from streams.encoding import EVENT_OFFSET, Encoder

FORMAT_VERSION = 1
_HEADER = struct.Struct("<BBHHqI")
_U32 = struct.Struct("<I")
HEADER_BYTES = _HEADER.size


class WindowFormatError(ValueError):
    """Stored window bytes that do not match the current encoding."""


@dataclass(frozen=True, slots=True)
class WindowHeader:
    """The fixed part of a stored window, readable without the encoding."""

    count: int
    partition: int
    vocab_tag: int
    last_ts_ms: int
    updated_s: int


def window_header(data: bytes) -> WindowHeader | None:
    """Parse just the header of stored window bytes (None if they are not a window)."""
    if len(data) < HEADER_BYTES or data[0] != FORMAT_VERSION:
        return None
    _, count, partition, tag, last_ts, updated = _HEADER.unpack_from(data)
    return WindowHeader(count, partition, tag, last_ts, updated)


@dataclass(frozen=True, slots=True)
class UserWindow:
    """The newest events of one user: packed records (``body``) and the header fields.

    Every operation on the hot path (parse, find a redelivery, append, store)
    works on bytes; :attr:`records` gives a numpy view for code that wants one.
    """

    body: bytes
    itemsize: int
    last_ts_ms: int
    updated_s: int
    partition: int = 0
    vocab_tag: int = 0
    dtype: np.dtype | None = None

    def __len__(self) -> int:
        """Number of events held."""
        return len(self.body) // self.itemsize

    @property
    def records(self) -> np.ndarray:
        """The records as a structured numpy array (a view on the bytes)."""
        return np.frombuffer(self.body, dtype=self.dtype)

    @classmethod
    def empty(cls, encoder: Encoder) -> UserWindow:
        """A window with no events yet."""
        return cls(b"", encoder.itemsize, 0, 0, 0, encoder.vocab_tag, encoder.dtype)

    @classmethod
    def from_bytes(cls, data: bytes, encoder: Encoder) -> UserWindow:
        """Parse stored bytes; raises :class:`WindowFormatError` if they do not fit."""
        if len(data) < HEADER_BYTES:
            raise WindowFormatError(f"window has {len(data)} bytes, shorter than its header")
        version, count, partition, tag, last_ts, updated = _HEADER.unpack_from(data)
        if version != FORMAT_VERSION:
            raise WindowFormatError(f"window format version {version}, expected {FORMAT_VERSION}")
        if len(data) - HEADER_BYTES != count * encoder.itemsize:
            raise WindowFormatError(
                f"window holds {len(data) - HEADER_BYTES} record bytes for {count} events of "
                f"{encoder.itemsize} bytes: it was written with another encoding")
        return cls(data[HEADER_BYTES:], encoder.itemsize, last_ts, updated, partition, tag,
                   encoder.dtype)

    def to_bytes(self) -> bytes:
        """The compact stored form."""
        header = _HEADER.pack(FORMAT_VERSION, len(self), self.partition, self.vocab_tag,
                              self.last_ts_ms, self.updated_s)
        return header + self.body

    def position_of(self, event_hash: int) -> int | None:
        """Index of the newest event with this id hash, if the window holds it (a redelivery)."""
        needle = _U32.pack(event_hash)
        end = len(self.body)
        while True:
            # A byte search, then a check that the hit is the event field of a record.
            at = self.body.rfind(needle, 0, end)
            if at < 0:
                return None
            if at % self.itemsize == EVENT_OFFSET:
                return at // self.itemsize
            end = at + len(needle) - 1

    def prefix(self, position: int) -> bytes:
        """The records up to and including ``position``."""
        return self.body[: (position + 1) * self.itemsize]

    def append(self, event: Event, encoder: Encoder, *, now_ms: int, ttl_ms: int,
               max_len: int | None = None, partition: int | None = None) -> UserWindow:
        """A new window with ``event`` added last and the oldest events dropped past max_len.

        When the user has been inactive for longer than ``ttl_ms`` (in event
        time), the old events are expired and the window starts afresh, exactly
        as if the user were new: replaying a log gives the same windows however
        fast it is replayed.
        """
        limit = encoder.spec.max_len if max_len is None else max_len
        fresh = not self.body or event.ts_ms - self.last_ts_ms > ttl_ms
        record = encoder.pack(event, None if fresh else self.last_ts_ms)
        keep = 0 if fresh else min(len(self), limit - 1) * self.itemsize
        body = self.body[len(self.body) - keep:] + record if keep else record
        # Out-of-order events keep the newest time so gaps never go negative.
        last_ts = event.ts_ms if fresh else max(self.last_ts_ms, event.ts_ms)
        return UserWindow(body, self.itemsize, last_ts, now_ms // 1000,
                          self.partition if partition is None else partition, encoder.vocab_tag,
                          encoder.dtype)

    def expired(self, now_ms: int, ttl_ms: int) -> bool:
        """True when the window has not been updated for longer than the TTL (wall clock)."""
        return now_ms - self.updated_s * 1000 > ttl_ms


def encode_history(events: list[Event], encoder: Encoder, ttl_ms: int) -> list[np.ndarray]:
    """Encode one user's whole history exactly as a worker would see it, event by event.

    Returns the history cut into segments wherever the worker would have
    started a fresh window (inactivity longer than ``ttl_ms``); each segment is
    an array of records whose gaps match what serving computes. Training uses
    this so that the model learns from the same inputs it is served.
    """
    segments: list[list[np.ndarray]] = []
    last_ts: int | None = None
    for event in events:
        if last_ts is None or event.ts_ms - last_ts > ttl_ms:
            segments.append([])
            previous = None
            last_ts = event.ts_ms
        else:
            previous = last_ts
            last_ts = max(last_ts, event.ts_ms)
        segments[-1].append(encoder.encode(event, previous))
    # np.array with the dtype, not np.stack: stacking structured scalars promotes
    # their fields one by one, 200x slower, which dominated encoding a training log.
    return [np.array(seg, dtype=encoder.dtype) for seg in segments]
