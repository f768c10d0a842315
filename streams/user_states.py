"""What the model computed for each user's recent events, kept for their next event.

With windowed attention (``attention_window`` W events per block) an event's
keys and values never change once computed, and the newest event's
prediction needs only the keys and values of the W - 1 events before it. The
graph returns them as ``state``; :class:`UserStates` keeps the latest state
of each recently active user, so the user's next event runs through the
network alone (the bundle's step graph) instead of recomputing the window.

A state is used only when it is exactly right: it depends on the last
``n_layers * (W - 1)`` records of the window it was computed from, and it is
used for a window only when the records before that window's newest event
end with the same bytes. A redelivered event, a window that lost events to
the TTL, a window stored under another encoding, another worker's user after
a rebalance: each is a miss and is computed from the whole window, never
from a stale state. So the cache changes the cost of a prediction, never
its value (up to float rounding, far below the export's parity tolerance).

Bounded: the least recently used users are dropped beyond ``capacity``
(each state is ``n_layers * 2 * (W - 1) * d_model`` floats: 24 KB for the
default model).
"""

from __future__ import annotations

from collections import OrderedDict

import numpy as np


class UserStates:
    """A bounded, least-recently-used map of user -> (the records it covers, state)."""

    def __init__(self, capacity: int, *, depends_on: int, record_size: int) -> None:
        self.capacity = capacity
        self._tail = depends_on * record_size  # bytes of window a state depends on
        self._record = record_size
        self._states: OrderedDict[str, tuple[bytes, np.ndarray]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._states)

    def before(self, user: str, window: bytes) -> np.ndarray | None:
        """The state computed for the records before ``window``'s newest, if held exactly."""
        entry = self._states.get(user)
        if entry is None:
            return None
        tail, state = entry
        if not self._continues(tail, window):
            return None
        self._states.move_to_end(user)
        return state

    def follows(self, previous: bytes, window: bytes) -> bool:
        """Whether the state computed for window ``previous`` serves ``window``'s newest event."""
        return self._continues(previous[-self._tail:], window)

    def _continues(self, tail: bytes, window: bytes) -> bool:
        # Shorter than the dependency, a window is compared whole (its length included).
        return window[-self._tail - self._record:-self._record] == tail

    def keep(self, user: str, window: bytes, state: np.ndarray) -> None:
        """Remember the state computed for ``window`` (a copy: rows of a batch share memory)."""
        self._states[user] = (window[-self._tail:], np.array(state, copy=True))
        self._states.move_to_end(user)
        while len(self._states) > self.capacity:
            self._states.popitem(last=False)

    def forget(self, user: str) -> None:
        """Drop a user's state (erasure)."""
        self._states.pop(user, None)
