"""Retention: windows idle for longer than the TTL are deleted, not just ignored.

The sweep reads only each stored window's header (partition and last update),
so scanning a large table is cheap. Expired windows are deleted from the store
and tombstoned on their changelog partition, so log compaction removes them
from Kafka too. Only windows of partitions this worker actively owns are
swept; standby copies are cleaned by their owner's tombstones.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from streams.window import window_header


@dataclass(frozen=True, slots=True)
class Expired:
    """A window to delete: its table key and changelog partition."""

    key: bytes
    partition: int


@dataclass
class SweepResult:
    """What one pass over the table found."""

    live: int = 0
    expired: int = 0


def sweep(items: Iterable[tuple[bytes, bytes]], *, now_ms: int, ttl_ms: int,
          partitions: set[int], result: SweepResult) -> Iterator[Expired]:
    """Yield the expired windows among ``items`` in the given partitions; count the live ones."""
    cutoff_s = (now_ms - ttl_ms) // 1000
    for key, value in items:
        header = window_header(value)
        if header is None or header.partition not in partitions:
            continue
        if header.updated_s < cutoff_s:
            result.expired += 1
            yield Expired(key, header.partition)
        else:
            result.live += 1
