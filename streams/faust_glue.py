"""Thin adapters between shopcast's plain logic and Faust's internals, kept in one place.

Faust's per-message conveniences cost more than shopcast's whole per-event
work: ``topic.send_soon`` goes through a 100-message buffer that blocks the
consumer whenever a batch sends more than that, ``table[key] = value`` sends
its changelog record the same way, and the default Monitor sensor records
statistics on every event. Here the worker sends straight through Faust's
own aiokafka producer (so Faust's flush-before-commit still covers every
message: at-least-once holds), writes windows to the table's store and its
changelog directly (one changelog record per window and chunk), and runs a
Monitor without the per-event hooks.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator, MutableMapping
from typing import Any

import faust
from faust.sensors import Monitor, Sensor
from faust.types import TP, AppT

from streams.metrics import WorkerMetrics


class LeanMonitor(Monitor):  # type: ignore[misc]
    """Faust's Monitor without the statistics it records on every message and event."""

    def on_message_in(self, tp: Any, offset: Any, message: Any) -> None:  # noqa: D102
        pass

    def on_stream_event_in(self, tp: Any, offset: Any, stream: Any, event: Any) -> None:  # noqa: D102
        return None

    def on_stream_event_out(self, tp: Any, offset: Any, stream: Any, event: Any,  # noqa: D102
                            state: Any = None) -> None:
        pass

    def on_message_out(self, tp: Any, offset: Any, message: Any) -> None:  # noqa: D102
        pass

    def on_table_get(self, table: Any, key: Any) -> None:  # noqa: D102
        pass

    def on_table_set(self, table: Any, key: Any, value: Any) -> None:  # noqa: D102
        pass

    def on_send_initiated(self, producer: Any, topic: str, message: Any, keysize: int,  # noqa: D102
                          valsize: int) -> Any:
        return None

    def on_send_completed(self, producer: Any, state: Any, metadata: Any) -> None:  # noqa: D102
        pass


class RebalanceSensor(Sensor):  # type: ignore[misc]
    """Counts consumer-group rebalances into the worker's metrics."""

    def __init__(self, metrics: WorkerMetrics) -> None:
        super().__init__()
        self.metrics = metrics

    def on_rebalance_start(self, app: AppT) -> dict[str, Any]:
        """A rebalance began."""
        self.metrics.rebalances.inc()
        return {}


class Outbox:
    """Messages a batch produces, sent straight through Faust's aiokafka producer.

    Messages with a known partition go out as one record batch per partition
    (aiokafka's ``send_batch``), which costs a fraction of a ``send`` per
    message; the order within each partition is the order they were added,
    across :meth:`send` calls too (a window's tombstone never overtakes a
    write of it queued before).
    """

    def __init__(self, app: faust.App) -> None:
        self.app = app
        self.pending: list[tuple[str, bytes | None, bytes | None, int | None]] = []
        self._sending = asyncio.Lock()  # bound to the event loop at its first use

    def add(self, topic: str, key: bytes | None, value: bytes | None,
            partition: int | None = None) -> None:
        """Queue one message for the next :meth:`send`."""
        self.pending.append((topic, key, value, partition))

    async def send(self) -> list[Any]:
        """Hand every queued message to the producer; returns their delivery futures."""
        # One send at a time: another one's batches could otherwise reach the producer first.
        async with self._sending:
            return await self._send()

    async def _send(self) -> list[Any]:
        # The aiokafka producer inside Faust's: the one Faust flushes before committing.
        producer = self.app.producer._ensure_producer()  # type: ignore[attr-defined]
        pending, self.pending = self.pending, []
        futures: list[Any] = []
        batches: dict[tuple[str, int], Any] = {}
        for topic, key, value, partition in pending:
            if partition is None:  # the producer's partitioner decides (rare: DLQ, re-keying)
                futures.append(await producer.send(topic, value, key=key))
                continue
            batch = batches.get((topic, partition))
            if batch is None:
                batch = batches[(topic, partition)] = producer.create_batch()
            if batch.append(key=key, value=value, timestamp=None) is None:  # batch full
                futures.append(await _send_batch(producer, batch, topic, partition))
                batch = batches[(topic, partition)] = producer.create_batch()
                batch.append(key=key, value=value, timestamp=None)
        for (topic, partition), batch in batches.items():
            futures.append(await _send_batch(producer, batch, topic, partition))
        return futures


async def _send_batch(producer: Any, batch: Any, topic: str, partition: int) -> Any:
    """Hand a complete record batch to the producer, to be sent without lingering."""
    # aiokafka lets an open batch linger (producer_linger) for more records that the
    # outbox never adds; a closed one is sent with the producer's next request. The
    # linger would delay every prediction, and the next chunk's batch for the same
    # partition waits until this one has left.
    batch.close()
    return await producer.send_batch(batch, topic, partition=partition)


class TableWindows(MutableMapping[bytes, bytes]):
    """The window table as a plain mapping: reads and writes its store, collects changelog records.

    Writes go to the store at once (a user's next event in the same chunk sees
    them); their changelog records wait for :meth:`flush`, which queues each
    key's latest value on the :class:`Outbox`, on the partition the caller
    named for it -- the record's own partition, as Faust would choose. The
    changelog is compacted, so a window's earlier states within one chunk
    would be dropped anyway: under load a user has several events per chunk,
    and each state is a full window (up to a kilobyte) for the producer to send.
    """

    def __init__(self, table: Any, outbox: Outbox) -> None:
        self.table = table
        self.store = table.data
        self.outbox = outbox
        self.changelog = table.changelog_topic.get_topic_name()
        self.partition = 0
        # Key -> (latest value, or None for a deletion; its changelog partition).
        self.unsent: dict[bytes, tuple[bytes | None, int]] = {}

    def __getitem__(self, key: bytes) -> bytes:
        return self.store[key]  # type: ignore[no-any-return]

    def get(self, key: bytes, default: Any = None) -> Any:
        """The stored window bytes, or ``default``."""
        return self.store.get(key, default)

    def __setitem__(self, key: bytes, value: bytes) -> None:
        self.store[key] = value
        self.unsent[key] = (value, self.partition)

    def __delitem__(self, key: bytes) -> None:
        del self.store[key]
        self.unsent[key] = (None, self.partition)

    def __iter__(self) -> Iterator[bytes]:
        return iter(self.store)

    def __len__(self) -> int:
        return len(self.store)

    def flush(self) -> None:
        """Queue the latest value of every key written since the last flush on the outbox."""
        changelog, add = self.changelog, self.outbox.add
        for key, (value, partition) in self.unsent.items():
            add(changelog, key, value, partition)
        self.unsent.clear()


def remember_persisted_offsets(table: Any, futures: list[Any]) -> None:
    """Tell a RocksDB store how far its changelog got, as Faust's own table writes do.

    On recovery, a store that knows its persisted offset reads only the
    changelog after it instead of the whole topic.
    """
    changelog = table.changelog_topic.get_topic_name()

    def done(fut: asyncio.Future[Any]) -> None:
        if not fut.cancelled() and fut.exception() is None:
            meta = fut.result()
            if meta.topic == changelog:
                table.data.set_persisted_offset(TP(meta.topic, meta.partition), meta.offset)

    for fut in futures:
        fut.add_done_callback(done)
