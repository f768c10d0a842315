"""A counter that keeps only its heaviest keys, so top-N figures have bounded memory."""

from __future__ import annotations

from collections import Counter
from collections.abc import Hashable, Iterable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)


class TopCounter(Generic[K]):
    """Counts keys; past ``capacity`` keys it drops the lighter half.

    Exact until the first drop (``exact`` stays True). After one, a key's count
    may miss what it had before it was dropped: heavy keys are barely touched,
    which is what a top list needs (lossy counting, simply done).
    """

    def __init__(self, capacity: int = 200_000) -> None:
        self.capacity = capacity
        self.counts: Counter[K] = Counter()
        self.exact = True

    def add(self, key: K, n: int = 1) -> None:
        """Count ``key`` ``n`` times."""
        self.counts[key] += n
        if len(self.counts) > self.capacity:
            self._prune()

    def update(self, keys: Iterable[K]) -> None:
        """Count each of ``keys`` once (in C: cheaper than :meth:`add` per key)."""
        self.counts.update(keys)
        if len(self.counts) > self.capacity:
            self._prune()

    def merge(self, other: TopCounter[K]) -> None:
        """Add another counter's counts (of other users)."""
        self.counts.update(other.counts)
        self.exact = self.exact and other.exact
        if len(self.counts) > self.capacity:
            self._prune()

    def top(self, n: int) -> list[tuple[K, int]]:
        """The ``n`` heaviest keys, ties by key."""
        return sorted(self.counts.items(), key=lambda kv: (-kv[1], str(kv[0])))[:n]

    def __getitem__(self, key: K) -> int:
        return self.counts.get(key, 0)

    def _prune(self) -> None:
        self.exact = False
        keep = self.capacity // 2
        self.counts = Counter(dict(self.counts.most_common(keep)))
