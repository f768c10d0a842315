"""How an event becomes model input: one place, used by training and serving alike.

An event is encoded into one fixed-size record (:data:`record_dtype`): the
item and category as vocabulary indices, the action, a log bucket of the time
since the user's previous event, a 32-bit hash of the event id (to drop
redeliveries) and a few hashed features of the scrubbed search text. A user's
window is a short array of such records; a batch of windows becomes the
model's int64 inputs, left-padded so the newest event is always last.
"""

from __future__ import annotations

import hashlib
import math
import struct
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass

import numpy as np
import orjson

from streams.contracts import ACTION_INDEX, ACTIONS, Event

# Reserved vocabulary indices, shared by items and categories.
PAD = 0  # no event at this position
NONE = 1  # the event has no item (a search) or no category
UNKNOWN = 2  # an id the model never saw in training
FIRST_TOKEN = 3

# Gap bucket 0 is padding and 1 means "no earlier event in the window".
GAP_PAD = 0
GAP_FIRST = 1

MODEL_INPUTS: tuple[str, ...] = ("items", "categories", "actions", "gaps", "queries")
MODEL_OUTPUTS: tuple[str, ...] = (
    "next_action", "top_items", "top_scores", "purchase_probability", "next_event_seconds",
)
# A model with windowed attention also returns its keys and values for the user's next
# event ("state"); its step graph takes them back as "past" (model_export.model).
STATE_OUTPUT = "state"
STEP_INPUTS: tuple[str, ...] = (*MODEL_INPUTS, "past", "fresh", "take")
# The graph's k of top-k, an initializer that the scorer overrides with SHOPCAST_TOP_K.
TOP_K_INITIALIZER = "top_k"


@dataclass(frozen=True)
class EncodingSpec:
    """Parameters of the encoding; saved in every bundle's manifest and checked on load."""

    max_len: int = 50
    gap_buckets: int = 32
    query_buckets: int = 4096
    query_slots: int = 4
    query_seed: int = 20261129
    char_ngram: int = 3
    actions: tuple[str, ...] = ACTIONS

    def to_dict(self) -> dict[str, object]:
        """The spec as plain JSON-ready data."""
        data = asdict(self)
        data["actions"] = list(self.actions)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, object]) -> EncodingSpec:
        """Rebuild a spec saved by :meth:`to_dict`."""
        fields = dict(data)
        fields["actions"] = tuple(fields.get("actions", ACTIONS))  # type: ignore[arg-type]
        return cls(**fields)  # type: ignore[arg-type]


# Byte offset of the event-id hash inside a record (after item u4, category u2,
# action u1, gap u1).
EVENT_OFFSET = 8


def record_struct(spec: EncodingSpec) -> struct.Struct:
    """The same layout as :func:`record_dtype`, for packing one record without numpy."""
    return struct.Struct(f"<IHBBI{spec.query_slots}H")


def record_dtype(spec: EncodingSpec) -> np.dtype:
    """The packed layout of one encoded event (20 bytes with the default spec)."""
    return np.dtype([
        ("item", "<u4"),
        ("category", "<u2"),
        ("action", "u1"),
        ("gap", "u1"),
        ("event", "<u4"),
        ("query", "<u2", (spec.query_slots,)),
    ])


class Vocabulary:
    """Maps ids (item or category strings) to indices; indices below 3 are reserved."""

    def __init__(self, tokens: Sequence[str]) -> None:
        self.tokens: list[str] = list(tokens)
        self._index = {tok: i + FIRST_TOKEN for i, tok in enumerate(self.tokens)}
        if len(self._index) != len(self.tokens):
            raise ValueError("vocabulary has duplicate ids")

    def __len__(self) -> int:
        """Size of the embedding table, reserved indices included."""
        return len(self.tokens) + FIRST_TOKEN

    def index(self, token: str | None) -> int:
        """Index of ``token``: NONE when absent, UNKNOWN when unseen in training."""
        if token is None:
            return NONE
        return self._index.get(token, UNKNOWN)

    def token(self, index: int) -> str | None:
        """The id at ``index``, or None for a reserved index."""
        return self.tokens[index - FIRST_TOKEN] if index >= FIRST_TOKEN else None

    def to_json(self) -> bytes:
        """The vocabulary file's content: a JSON array of ids in index order."""
        return orjson.dumps(self.tokens)

    @classmethod
    def from_json(cls, data: bytes) -> Vocabulary:
        """Load a vocabulary written by :meth:`to_json`."""
        tokens = orjson.loads(data)
        if not isinstance(tokens, list) or not all(isinstance(t, str) for t in tokens):
            raise ValueError("a vocabulary file must be a JSON array of strings")
        return cls(tokens)

    def digest(self) -> str:
        """sha256 of the vocabulary, recorded in the manifest and checked by the worker."""
        return hashlib.sha256(self.to_json()).hexdigest()

    @classmethod
    def build(cls, ids: Iterable[str | None], min_count: int = 1) -> Vocabulary:
        """A vocabulary of the ids seen at least ``min_count`` times, most frequent first."""
        counts: dict[str, int] = {}
        for tok in ids:
            if tok is not None:
                counts[tok] = counts.get(tok, 0) + 1
        ordered = sorted((t for t, c in counts.items() if c >= min_count),
                         key=lambda t: (-counts[t], t))
        return cls(ordered)


def gap_bucket(seconds: float | None, spec: EncodingSpec) -> int:
    """Log2 bucket of the time since the previous event (GAP_FIRST when there was none)."""
    if seconds is None:
        return GAP_FIRST
    b = int(math.log2(1.0 + max(0.0, seconds)))
    return 2 + min(b, spec.gap_buckets - 3)


def event_hash(event_id: str) -> int:
    """A 32-bit hash of an event id, used to recognise redeliveries inside a window."""
    return zlib.crc32(event_id.encode("utf-8"))


def _hash(feature: str, seed: bytes) -> int:
    return zlib.crc32(feature.encode("utf-8"), zlib.crc32(seed))


def query_features(query: str | None, spec: EncodingSpec) -> list[int]:
    """Hashed text features of a scrubbed query: ``query_slots`` bucket ids (0 = empty slot).

    Half of the slots hold words and half hold character n-grams of the words,
    each chosen by smallest hash (a MinHash-style pick), so word order does not
    matter and a typo changes only some of the n-grams: an unseen query still
    lands near the queries it resembles.
    """
    slots = [0] * spec.query_slots
    if not query:
        return slots
    seed = spec.query_seed.to_bytes(8, "little")
    words = query.split()
    n = spec.char_ngram
    word_hashes = sorted({_hash("w:" + w, seed) for w in words})
    grams = {f"<{w}>"[i:i + n] for w in words for i in range(max(1, len(w) + 3 - n))}
    gram_hashes = sorted({_hash("c:" + g, seed) for g in grams})
    n_words = spec.query_slots // 2
    picked = word_hashes[:n_words] + gram_hashes[: spec.query_slots - min(n_words,
                                                                          len(word_hashes))]
    for i, h in enumerate(picked[: spec.query_slots]):
        slots[i] = 1 + h % (spec.query_buckets - 1)
    return slots


# Distinct queries an Encoder remembers the features of (see Encoder.query_slots).
QUERY_MEMORY = 8192


def encoding_tag(spec: EncodingSpec, items: Vocabulary, categories: Vocabulary) -> int:
    """The 16-bit tag of an encoding (spec and vocabularies) that stored windows carry."""
    digest = hashlib.sha256(orjson.dumps(spec.to_dict(), option=orjson.OPT_SORT_KEYS))
    digest.update(items.digest().encode())
    digest.update(categories.digest().encode())
    return int(digest.hexdigest()[:4], 16)


class Encoder:
    """Turns events into packed records, given the bundle's spec and vocabularies."""

    def __init__(self, spec: EncodingSpec, items: Vocabulary, categories: Vocabulary) -> None:
        self.spec = spec
        self.items = items
        self.categories = categories
        self.dtype = record_dtype(spec)
        self._struct = record_struct(spec)
        self.itemsize = self._struct.size
        assert self.itemsize == self.dtype.itemsize
        # 16 bits of a digest of everything a stored record's meaning depends on -- the spec
        # and both vocabularies -- stamped on every stored window, so that a worker serving
        # another bundle (streams/hot_swap.py) does not read an old window as its own.
        self.vocab_tag = encoding_tag(spec, items, categories)
        self._no_query = tuple(query_features(None, spec))
        self._queries: dict[str, tuple[int, ...]] = {}

    def pack(self, event: Event, previous_ts_ms: int | None) -> bytes:
        """One event as a packed record (the bytes a window stores)."""
        gap = None if previous_ts_ms is None else (event.ts_ms - previous_ts_ms) / 1000.0
        return self._struct.pack(
            self.items.index(event.item_id),
            self.categories.index(event.category),
            ACTION_INDEX[event.type] + 1,  # 0 is padding
            gap_bucket(gap, self.spec),
            event_hash(event.event_id),
            *self.query_slots(event.query),
        )

    def query_slots(self, query: str | None) -> tuple[int, ...]:
        """:func:`query_features` of a scrubbed query, remembered for the queries seen lately.

        Shoppers repeat each other's searches, and hashing a query's words and
        n-grams costs more than the rest of encoding its event. The memory holds
        scrubbed text only (as the events do), at most QUERY_MEMORY queries, and
        is emptied when full.
        """
        if not query:
            return self._no_query
        slots = self._queries.get(query)
        if slots is None:
            if len(self._queries) >= QUERY_MEMORY:
                self._queries.clear()
            slots = self._queries[query] = tuple(query_features(query, self.spec))
        return slots

    def encode(self, event: Event, previous_ts_ms: int | None) -> np.ndarray:
        """One event as a 0-d record of :func:`record_dtype`."""
        return np.frombuffer(self.pack(event, previous_ts_ms), dtype=self.dtype)[0]


def batch_inputs(windows: Sequence[np.ndarray | bytes], spec: EncodingSpec, *,
                 min_len: int = 1) -> dict[str, np.ndarray]:
    """Model inputs for a batch of windows, left-padded to the longest (or ``min_len``).

    A window is an array of records or their packed bytes. The newest event
    of every window sits at the last position, which is where the model reads
    its prediction.
    """
    if windows and isinstance(windows[0], bytes):
        return _batch_from_bytes(windows, spec, min_len)  # type: ignore[arg-type]
    length = max(min_len, max((len(w) for w in windows), default=1))
    batch = len(windows)
    items = np.zeros((batch, length), dtype=np.int64)
    categories = np.zeros((batch, length), dtype=np.int64)
    actions = np.zeros((batch, length), dtype=np.int64)
    gaps = np.zeros((batch, length), dtype=np.int64)
    queries = np.zeros((batch, length, spec.query_slots), dtype=np.int64)
    for row, window in enumerate(windows):
        assert isinstance(window, np.ndarray)
        n = len(window)
        if n == 0:
            continue
        items[row, length - n:] = window["item"]
        categories[row, length - n:] = window["category"]
        actions[row, length - n:] = window["action"]
        gaps[row, length - n:] = window["gap"]
        queries[row, length - n:] = window["query"]
    return {"items": items, "categories": categories, "actions": actions, "gaps": gaps,
            "queries": queries}


def _batch_from_bytes(bodies: Sequence[bytes], spec: EncodingSpec, min_len: int
                      ) -> dict[str, np.ndarray]:
    # Left-pad every window with zero records, join, and read each field as one
    # (B, T) view: a handful of numpy calls per batch instead of per window.
    dtype = record_dtype(spec)
    size = dtype.itemsize
    length = max(min_len, max(len(b) for b in bodies) // size)
    full = length * size
    joined = b"".join(bytes(full - len(b)) + b if len(b) < full else b for b in bodies)
    records = np.frombuffer(joined, dtype=dtype).reshape(len(bodies), length)
    return {
        "items": records["item"].astype(np.int64),
        "categories": records["category"].astype(np.int64),
        "actions": records["action"].astype(np.int64),
        "gaps": records["gap"].astype(np.int64),
        "queries": records["query"].astype(np.int64),
    }
