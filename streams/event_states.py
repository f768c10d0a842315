"""Each user's event states from their last prediction: the newest event alone is new work.

The model's lower blocks turn every event of a window into a state vector
(``event_states``, (L - 1, C) per event). Attention is causal and rotary, so an
event's states do not change when later events arrive or when the window is
padded differently. The scorer keeps the states of each user's last scored
window here; when the user's next window is that window plus one event, the
bundle's incremental graph runs the lower blocks for the newest event only and
reads the earlier events' states from here, which gives the same predictions up
to float rounding (the export checks it, ``newest_parity`` in the manifest).

Anything else is a miss and gets the full graph: a window that slid (it was
full, or an event expired), a redelivery scored on an older prefix, a window
rebuilt on another worker after a rebalance, a second event of the same user in
one batch. The check compares a digest of the window's records, so a stale
entry is never used. A bundle swap builds a new scorer and with it a new cache.

Memory: at most ``capacity`` users (the least recently scored is dropped
first), each (events - 1) x (L - 1) x C float32 -- 12.5 KB for a 50-event
window of the default bundle. Full windows are not kept: their next window
slides, so they could never be used.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict

import numpy as np


def window_digest(records: bytes) -> bytes:
    """A short digest of a window's packed records (what the cache compares)."""
    return hashlib.blake2b(records, digest_size=16).digest()


class EventStateCache:
    """Per-user event states, least recently used out first; used from the scorer thread."""

    def __init__(self, capacity: int, max_events: int) -> None:
        self.capacity = capacity
        self.max_events = max_events  # windows this long slide: their states are not kept
        self._entries: OrderedDict[str, tuple[bytes, np.ndarray]] = OrderedDict()
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._entries)

    def earlier(self, user_id: str, records: bytes, record_size: int) -> np.ndarray | None:
        """The states of every event but the newest, if they are cached for exactly those events.

        ``records`` is the window about to be scored (its newest event last).
        """
        entry = self._entries.get(user_id)
        if entry is not None and len(entry[1]) * record_size == len(records) - record_size \
                and entry[0] == window_digest(records[:-record_size]):
            self.hits += 1
            return entry[1]
        self.misses += 1
        return None

    def keep(self, user_id: str, records: bytes, states: np.ndarray) -> None:
        """Remember the states (events, L - 1, C) of the window just scored for a user."""
        if len(states) >= self.max_events or self.capacity == 0:
            self._entries.pop(user_id, None)  # its next window slides: no use
            return
        self._entries[user_id] = (window_digest(records), states)
        self._entries.move_to_end(user_id)
        while len(self._entries) > self.capacity:
            self._entries.popitem(last=False)

    def forget(self, user_id: str) -> None:
        """Drop a user's states (an erasure request)."""
        self._entries.pop(user_id, None)
