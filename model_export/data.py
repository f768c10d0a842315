"""Event logs to model data: read, split by time per user, encode, label.

Every user's history is split by time: the last event is the test target, the
one before it the validation target and everything earlier is training data.
Vocabularies come from the training part only, and the labels of training
positions are computed from training events only, so nothing a model is
scored on ever leaks into what it learns from.

Inputs are encoded with :func:`streams.window.encode_history`, exactly as a
worker encodes them, including the window resets after a TTL of inactivity.
The prediction made at event ``t`` reads the window that ends with ``t`` and is
about event ``t + 1``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from streams.bundle import file_sha256
from streams.contracts import ACTION_INDEX, Event, Rejection, decode_event
from streams.encoding import NONE, UNKNOWN, Encoder, EncodingSpec, Vocabulary, batch_inputs
from streams.eventlog import read_log
from streams.window import encode_history

# A log is history: validate it as if read far in the future, so no event is "too new".
FAR_FUTURE_MS = 4_102_444_800_000  # 2100-01-01T00:00:00Z
DEFAULT_TTL_SECONDS = 30 * 24 * 3600  # the worker's default SHOPCAST_WINDOW_TTL_SECONDS
DEFAULT_HORIZON_SECONDS = 24 * 3600
PURCHASE = ACTION_INDEX["purchase"]
IGNORE = -1  # label value of a position that has no such label


@dataclass
class EventLog:
    """The valid events of a log file, in file order, and what was rejected."""

    events: list[Event]
    sha256: str
    lines: int
    rejected: dict[str, int] = field(default_factory=dict)


def read_events(path: Path | str) -> EventLog:
    """Read a JSON Lines (optionally ``.gz``) or Parquet event log, validating every event.

    Records that break the Event v1 contract are skipped and counted by reason
    code, as a worker would dead-letter them.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"event log {path} does not exist; write one with "
                                "'shopcast generate' or 'shopcast import'")
    events: list[Event] = []
    rejected: dict[str, int] = {}
    lines = 0
    for record in read_log(path):
        lines += 1
        decoded = decode_event(record.value, now_ms=FAR_FUTURE_MS)
        if isinstance(decoded, Rejection):
            rejected[decoded.reason] = rejected.get(decoded.reason, 0) + 1
        else:
            events.append(decoded)
    return EventLog(events, file_sha256(path), lines, rejected)


def group_by_user(events: list[Event]) -> dict[str, list[Event]]:
    """Each user's events in file order (as a worker sees them), redeliveries dropped."""
    users: dict[str, list[Event]] = {}
    seen: dict[str, set[str]] = {}
    for event in events:
        ids = seen.setdefault(event.user_id, set())
        if event.event_id in ids:
            continue
        ids.add(event.event_id)
        users.setdefault(event.user_id, []).append(event)
    return users


def train_length(n_events: int) -> int:
    """How many of a user's events are training events: all but the last two.

    Users with fewer than three events have no validation or test target and
    train only.
    """
    return n_events - 2 if n_events >= 3 else n_events


def build_vocabularies(users: dict[str, list[Event]]) -> tuple[Vocabulary, Vocabulary]:
    """Item and category vocabularies from the training part of every history."""
    train = [e for events in users.values() for e in events[: train_length(len(events))]]
    return (Vocabulary.build(e.item_id for e in train),
            Vocabulary.build(e.category for e in train))


@dataclass
class UserHistory:
    """One user's encoded history and its split."""

    user_id: str
    events: list[Event]
    records: np.ndarray  # (n,) records as serving encodes them
    segment_start: np.ndarray  # (n,) index of the first event of each event's window segment
    ts_ms: np.ndarray  # (n,) int64 event times
    actions: np.ndarray  # (n,) int64 action class 0..4
    n_train: int

    def window(self, t: int, max_len: int) -> np.ndarray:
        """The window a worker holds right after event ``t``: at most ``max_len`` records."""
        start = max(int(self.segment_start[t]), t - max_len + 1)
        return self.records[start: t + 1]


@dataclass
class Prepared:
    """A whole log, split and encoded, plus what is needed to rebuild the encoding."""

    spec: EncodingSpec
    items: Vocabulary
    categories: Vocabulary
    users: list[UserHistory]
    ttl_ms: int
    horizon_ms: int

    @property
    def encoder(self) -> Encoder:
        """The encoder of this data's spec and vocabularies."""
        return Encoder(self.spec, self.items, self.categories)


def prepare(log: EventLog, spec: EncodingSpec, *, ttl_seconds: int = DEFAULT_TTL_SECONDS,
            horizon_seconds: int = DEFAULT_HORIZON_SECONDS,
            vocabularies: tuple[Vocabulary, Vocabulary] | None = None) -> Prepared:
    """Split and encode a log; vocabularies come from its training part unless given."""
    users = group_by_user(log.events)
    items, categories = vocabularies or build_vocabularies(users)
    encoder = Encoder(spec, items, categories)
    ttl_ms = ttl_seconds * 1000
    histories = []
    for user_id, events in users.items():
        segments = encode_history(events, encoder, ttl_ms)
        starts = np.concatenate([np.full(len(s), 0, dtype=np.int64) for s in segments])
        offset = 0
        for seg in segments:
            starts[offset: offset + len(seg)] = offset
            offset += len(seg)
        histories.append(UserHistory(
            user_id=user_id, events=events, records=np.concatenate(segments),
            segment_start=starts,
            ts_ms=np.array([e.ts_ms for e in events], dtype=np.int64),
            actions=np.array([ACTION_INDEX[e.type] for e in events], dtype=np.int64),
            n_train=train_length(len(events))))
    return Prepared(spec, items, categories, histories, ttl_ms, horizon_seconds * 1000)


def purchase_label(user: UserHistory, t: int, limit: int, horizon_ms: int, *,
                   censor: bool) -> int:
    """1 if a purchase follows event ``t`` within the horizon, among events before ``limit``.

    With ``censor`` the label is :data:`IGNORE` unless the observed events
    cover the whole horizon (the last one is past it), so training positions
    near the end of the training part are not mislabelled as "no purchase"
    because the events that would say otherwise belong to validation or test.
    """
    end = user.ts_ms[t] + horizon_ms
    for j in range(t + 1, limit):
        if user.ts_ms[j] > end:
            return 0
        if user.actions[j] == PURCHASE:
            return 1
    return IGNORE if censor else 0


def log_gap(user: UserHistory, t: int) -> float:
    """Log of one plus the seconds from event ``t`` to event ``t + 1`` (the time target)."""
    seconds = max(0.0, (int(user.ts_ms[t + 1]) - int(user.ts_ms[t])) / 1000.0)
    return math.log1p(seconds)


@dataclass
class Chunks:
    """Training sequences: left-padded inputs and a target for every position."""

    inputs: dict[str, np.ndarray]  # items, categories, actions, gaps (N, L); queries (N, L, S)
    next_action: np.ndarray  # (N, L) action class of the next event, IGNORE on padding
    next_item: np.ndarray  # (N, L) item index of the next event, IGNORE when it has none
    purchase: np.ndarray  # (N, L) purchase within the horizon: 1, 0 or IGNORE
    log_seconds: np.ndarray  # (N, L) log1p(seconds to next event), NaN on padding
    # (N,) index into ``Prepared.users`` of each sequence's user: private training
    # samples and clips per user, not per sequence.
    user: np.ndarray | None = None

    def __len__(self) -> int:
        """Number of sequences."""
        return len(self.next_action)


def training_chunks(data: Prepared) -> Chunks:
    """Cut every user's training part into sequences of at most ``max_len`` positions.

    Position ``t`` is the window ending at event ``t`` and its targets come from
    event ``t + 1``; both must be training events. A sequence never crosses a
    TTL reset, because the worker never holds events from both sides of one.
    """
    length = data.spec.max_len
    windows: list[np.ndarray] = []
    labels: list[tuple[np.ndarray, ...]] = []
    owners: list[int] = []
    for number, user in enumerate(data.users):
        last_input = user.n_train - 2  # input t needs target t + 1 inside training
        t = last_input
        while t >= 0:
            start = max(int(user.segment_start[t]), t - length + 1)
            positions = range(start, t + 1)
            windows.append(user.records[start: t + 1])
            labels.append(_labels(data, user, positions, limit=user.n_train, censor=True))
            owners.append(number)
            t = start - 1
    inputs = batch_inputs(windows, data.spec) if windows else _empty_inputs(data.spec, length)
    return Chunks(inputs, *_pad_labels(labels, inputs["actions"].shape[1]),
                  user=np.array(owners, dtype=np.int64))


def _labels(data: Prepared, user: UserHistory, positions: range, *, limit: int,
            censor: bool) -> tuple[np.ndarray, ...]:
    nxt = [t + 1 for t in positions]
    action = user.actions[nxt]
    item = user.records["item"][nxt].astype(np.int64)
    item[item == NONE] = IGNORE  # a search has no item to predict
    purchase = np.array([purchase_label(user, t, limit, data.horizon_ms, censor=censor)
                         for t in positions], dtype=np.int64)
    seconds = np.array([log_gap(user, t) for t in positions], dtype=np.float32)
    return action, item, purchase, seconds


def _pad_labels(labels: list[tuple[np.ndarray, ...]], length: int) -> list[np.ndarray]:
    n = len(labels)
    action = np.full((n, length), IGNORE, dtype=np.int64)
    item = np.full((n, length), IGNORE, dtype=np.int64)
    purchase = np.full((n, length), IGNORE, dtype=np.int64)
    seconds = np.full((n, length), np.nan, dtype=np.float32)
    for row, (a, i, p, s) in enumerate(labels):
        k = len(a)  # left padding: the newest position is the last column
        action[row, length - k:] = a
        item[row, length - k:] = i
        purchase[row, length - k:] = p
        seconds[row, length - k:] = s
    return [action, item, purchase, seconds]


def _empty_inputs(spec: EncodingSpec, length: int) -> dict[str, np.ndarray]:
    shape = (0, length)
    return {"items": np.zeros(shape, np.int64), "categories": np.zeros(shape, np.int64),
            "actions": np.zeros(shape, np.int64), "gaps": np.zeros(shape, np.int64),
            "queries": np.zeros((*shape, spec.query_slots), np.int64)}


@dataclass
class Case:
    """One held-out prediction: the window before a target event, and the target."""

    user: UserHistory
    t: int  # the window ends with event t; the target is event t + 1
    window: np.ndarray
    next_action: int
    next_item_id: str | None  # the target's item id, None when it has no item
    next_item: int  # the target's vocabulary index (UNKNOWN when unseen in training)
    purchase: int  # purchase within the horizon after event t, among the observed events
    seconds: float  # seconds from event t to the target

    @property
    def history_length(self) -> int:
        """Events in the window the prediction was made from."""
        return len(self.window)


def held_out_cases(data: Prepared, split: str) -> list[Case]:
    """The validation (``"validation"``) or test (``"test"``) predictions, one per user.

    The validation prediction reads the training events and targets the
    validation event; the test prediction also reads the validation event and
    targets the last event. The purchase label looks only up to the target: the
    log says nothing after a user's last event, so for test it is "the last
    event is a purchase within the horizon".
    """
    if split not in ("validation", "test"):
        raise ValueError(f"split must be 'validation' or 'test', got {split!r}")
    cases = []
    for user in data.users:
        n = len(user.events)
        if n < 3:
            continue
        target = n - 2 if split == "validation" else n - 1
        t = target - 1
        event = user.events[target]
        cases.append(Case(
            user=user, t=t, window=user.window(t, data.spec.max_len),
            next_action=int(user.actions[target]),
            next_item_id=event.item_id,
            next_item=data.items.index(event.item_id) if event.item_id else NONE,
            purchase=purchase_label(user, t, target + 1, data.horizon_ms, censor=False),
            seconds=max(0.0, (int(user.ts_ms[target]) - int(user.ts_ms[t])) / 1000.0)))
    return cases


def case_inputs(cases: list[Case], spec: EncodingSpec) -> dict[str, np.ndarray]:
    """Left-padded model inputs for a batch of cases (what the worker would send)."""
    return batch_inputs([c.window for c in cases], spec)


def is_unknown(case: Case) -> bool:
    """True when the target item was never seen in training (no model can rank it)."""
    return case.next_item == UNKNOWN
