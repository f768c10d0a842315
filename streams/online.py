"""Online accuracy: each prediction is scored when the user's next event arrives.

The worker remembers, per user, what it last predicted (top-10 item indices,
the most likely action, the purchase probability) and, when the user's next
event comes, counts item hit@10 and whether the action was right. Purchase
predictions are resolved against the horizon: a purchase within it is a
positive outcome, the first event after it without one a negative outcome.
Memory is bounded: the least recently active users are forgotten first.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Sequence
from typing import Final

import numpy as np

from streams.contracts import ACTION_INDEX, Event
from streams.metrics import WorkerMetrics, probability_bucket

HIT_AT = 10


# What is remembered of a user: (top-10 item vocabulary indices, the most likely action,
# the oldest purchase prediction not yet resolved as probability and event time in ms,
# the wall clock of the user's latest event here for idle expiry). A plain tuple of
# numbers, not an object: the garbage collector stops tracking such tuples, where every
# full collection visited each of up to max_users objects (and their lists) while
# holding the GIL -- a pause of its own for every thread of the worker.
_Last = tuple[tuple[int, ...], int, float, int, float]
SEEN: Final = 4  # the index of the wall clock in _Last


class OnlineAccuracy:
    """Scores the previous prediction of each user against their next event."""

    def __init__(self, metrics: WorkerMetrics, horizon_ms: int, max_users: int = 200_000,
                 idle_ms: int | None = None) -> None:
        self.metrics = metrics
        self.horizon_ms = horizon_ms
        self.max_users = max_users
        # Users idle for longer than this are forgotten, as their windows are (the TTL):
        # with users coming and going, max_users alone lets memory grow for hours.
        self.idle_s = None if idle_ms is None else idle_ms / 1000.0
        self._last: OrderedDict[str, _Last] = OrderedDict()

    def observe(self, events: Sequence[Event], item_index: Sequence[int],
                top_items: np.ndarray, next_action: np.ndarray, purchase: np.ndarray) -> None:
        """Score earlier predictions against ``events``, then remember the new ones.

        Rows are in event order, so a user with two events in one batch has the
        first event's prediction scored by the second.
        """
        m = self.metrics
        now = time.time()
        # Plain Python values for the whole batch at once, and the counters added up once
        # at the end: numpy scalars and a locked increment per event cost more than the
        # scoring itself in this thread.
        tops = [tuple(row) for row in top_items[:, :HIT_AT].tolist()]
        actions = next_action.argmax(axis=1).tolist()
        purchases = purchase.tolist()
        items = item_hits = scored = correct = 0
        for row, event in enumerate(events):
            last = self._last.pop(event.user_id, None)
            p, p_ts = purchases[row], event.ts_ms
            if last is not None:
                last_items, last_action, open_p, open_ts, _ = last
                if item_index[row] > 2:  # the event has an item the model knows
                    items += 1
                    item_hits += item_index[row] in last_items
                scored += 1
                correct += ACTION_INDEX[event.type] == last_action
                p, p_ts = self._resolve_purchase(open_p, open_ts, event, p, p_ts)
            self._last[event.user_id] = (tops[row], actions[row], p, p_ts, now)
            if len(self._last) > self.max_users:
                self._last.popitem(last=False)
        for counter, n in ((m.online_item, items), (m.online_item_hits, item_hits),
                           (m.online_action, scored), (m.online_action_correct, correct)):
            if n:
                counter.inc(n)
        if self.idle_s is not None:
            # Least recently seen first (a user's entry moves to the end on every event).
            while self._last and now - next(iter(self._last.values()))[SEEN] > self.idle_s:
                self._last.popitem(last=False)

    def forget(self, user_id: str) -> None:
        """Drop what is remembered about a user (an erasure request)."""
        self._last.pop(user_id, None)

    def _resolve_purchase(self, open_p: float, open_ts: int, event: Event, p: float,
                          p_ts: int) -> tuple[float, int]:
        """Resolve the open purchase prediction if this event settles it; return the open one."""
        bucket = probability_bucket(open_p)
        if event.type == "purchase" and event.ts_ms - open_ts <= self.horizon_ms:
            self.metrics.purchase_outcomes.labels(bucket, "purchase").inc()
            self.metrics.purchase_expected.labels(bucket).inc(open_p)
            return p, p_ts
        if event.ts_ms - open_ts > self.horizon_ms:
            self.metrics.purchase_outcomes.labels(bucket, "none").inc()
            self.metrics.purchase_expected.labels(bucket).inc(open_p)
            return p, p_ts
        return open_p, open_ts  # still open: keep the older prediction
