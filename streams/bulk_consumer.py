"""Bulk delivery of the events topics: Faust's consumer, without its per-message hand-offs.

Faust delivers each fetched record on its own: its fetch loop awaits
``wait_first(callback(message), suspend_flow.wait())`` -- two new tasks per
record -- and the conductor then builds an Event, queues it and the stream
pulls it back out. That plumbing costs several times shopcast's whole
per-event work (see benchmarks/history.md). :class:`BulkConsumer` keeps
everything else of Faust's consumer (group membership, assignment,
co-partitioned tables and their recovery, offset tracking and commits,
flow control during rebalances) and changes one thing: records of the bulk
topics are handed to one async handler per fetched batch. The handler acks
every record once its outputs are queued on the producer, so Faust's commit
(which flushes the producer first) never commits past unsent output: the
guarantee stays at-least-once.

This depends on Faust's consumer internals and is pinned to the
faust-streaming versions in pyproject.toml; tests/integration covers it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import Message
from faust.types.tuples import ack_lock
from mode.utils.futures import notify

from streams.faust_fixes import reseek

log = logging.getLogger(__name__)

BulkHandler = Callable[[list[Message]], Awaitable[None]]
# Waits until the handler's work still under way (records handed over but not yet
# acknowledged) is done: called before partitions are revoked, so their commit covers it.
Settle = Callable[[], Awaitable[None]]
# Hand over at most this many records at once, so a partition with a deep
# backlog cannot keep the others (and the heartbeat of the event loop) waiting.
MAX_BULK = 2048


# Faust hard-codes a 1.5 s fetch wait. Apache Kafka answers a fetch as soon as
# data arrives, but tansu (the embedded broker) waits the full time, which then
# shows up as latency. install() sets SHOPCAST_BATCH_MAX_WAIT_MS instead.
FETCH_MAX_WAIT_MS = 20
# What a fetch waits for (up to the wait above); aiokafka's default is a single byte.
# install() sets SHOPCAST_BATCH_MIN_BYTES.
FETCH_MIN_BYTES = 1

# Longest a stopping worker waits for the records being processed to be acknowledged. A
# stop should never hang: whatever is still unacknowledged then is simply not committed.
STOP_ACK_WAIT_S = 15.0


class _ConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):  # type: ignore[misc]
    def _create_worker_consumer(self, transport: Any) -> Any:
        consumer = super()._create_worker_consumer(transport)
        # Read when its fetcher starts.
        consumer._fetch_max_wait_ms = getattr(self.consumer, "fetch_max_wait_ms",
                                              FETCH_MAX_WAIT_MS)
        consumer._fetch_min_bytes = getattr(self.consumer, "fetch_min_bytes", FETCH_MIN_BYTES)
        return consumer


class BulkConsumer(faust_aiokafka.Consumer):  # type: ignore[misc]
    """Faust's aiokafka consumer with batched delivery for the topics in ``bulk_topics``."""

    bulk_topics: frozenset[str] = frozenset()
    bulk_handler: BulkHandler | None = None
    bulk_settle: Settle | None = None
    fetch_max_wait_ms: int = FETCH_MAX_WAIT_MS
    fetch_min_bytes: int = FETCH_MIN_BYTES

    # Revocations so far; a batch fetched before one is stale (see _hand_over).
    _revocations = 0
    _handing: asyncio.Lock | None = None

    async def on_partitions_revoked(self, revoked: Any) -> None:
        """Let the handler finish what it took on, then revoke as Faust does (with fix 3)."""
        self._revocations += 1
        if revoked and self.bulk_settle is not None:
            async with self._handing_lock():  # the batch being handed over, then the rest
                try:
                    await self.bulk_settle()
                except Exception as exc:  # not acknowledged: read again by the next owner
                    log.warning("records under way before the rebalance failed (%r)", exc)
        await super().on_partitions_revoked(revoked)

    def _handing_lock(self) -> asyncio.Lock:
        if self._handing is None:
            self._handing = asyncio.Lock()
        return self._handing

    async def _hand_over(self, batch: list[Message], revocations: int) -> None:
        """Give ``batch`` to the handler -- unless a rebalance began since it was fetched.

        The revocation's commit has then been made without it, and the partitions go back
        to their committed offsets (to this worker or another one): processing it here too
        would only predict its events twice. It is not acknowledged, and the partitions
        are sought to their committed offsets once more (as faust_fixes' fix 1 does for a
        stale fetch), so whatever it held is read again -- here or by the next owner.
        """
        async with self._handing_lock():
            if self._revocations == revocations:
                await self.bulk_handler(batch)  # type: ignore[misc]
                return
        self.forget_unacked(batch)
        log.info("a rebalance overtook %d fetched records; they are read again from the "
                 "committed offsets", len(batch))
        await reseek(self)

    def _new_consumer_thread(self) -> Any:
        return _ConsumerThread(self, loop=self.loop, beacon=self.beacon)

    async def _drain_messages(self, fetcher: Any) -> None:  # pragma: no cover - via tests
        # Mirrors faust.transport.consumer.Consumer._drain_messages; the
        # difference is marked BULK.
        callback = self.callback
        getmany = self.getmany
        consumer_should_stop = self._stopped.is_set
        fetcher_should_stop = fetcher._stopped.is_set
        get_read_offset = self._read_offset.__getitem__
        set_read_offset = self._read_offset.__setitem__
        acks_enabled_for = self.app.topics.acks_enabled_for
        track_bulk = self.track_bulk
        bulk_topics = self.bulk_topics
        bulk_enabled = self.bulk_handler is not None
        hand_over = self._hand_over
        batch: list[Message] = []
        try:
            while not (consumer_should_stop() or fetcher_should_stop()):
                batch = []
                await asyncio.sleep(0)
                if self.should_stop:
                    break
                revocations = self._revocations
                async for tp, message in getmany(timeout=1.0):
                    offset = message.offset
                    r_offset = get_read_offset(tp)
                    if r_offset is not None and offset < r_offset:
                        continue  # already read: Faust drops these too
                    gap = offset - (r_offset or 0)
                    if gap > 1 and r_offset and acks_enabled_for(message.topic):
                        # Offsets without records (transaction markers, compaction)
                        # must count as acked or commits would stall behind them.
                        await self._add_gap(tp, r_offset + 1, offset)
                    if bulk_enabled and message.topic in bulk_topics:
                        # BULK: collect; one handler call per fetched batch.
                        track_bulk(message)
                        batch.append(message)
                        set_read_offset(tp, offset)
                        if len(batch) >= MAX_BULK:
                            await hand_over(batch, revocations)
                            batch = []
                        continue
                    if batch:  # keep the order of records across topics
                        await hand_over(batch, revocations)
                        batch = []
                    await self.wait_first(callback(message), self.suspend_flow.wait())
                    set_read_offset(tp, offset)
                if batch:
                    await hand_over(batch, revocations)
                if self._n_acked >= (self._commit_every or float("inf")):
                    self._n_acked = 0
                    await self.commit()
        except self.consumer_stopped_errors:
            if self.transport.app.should_stop:
                return
            raise
        except asyncio.CancelledError:
            if self.transport.app.should_stop:
                return
            raise
        finally:
            # A stop that cancels a batch mid-way leaves records tracked that will never
            # be acknowledged, and Faust's stop waits for every tracked record: forever.
            # They are not acknowledged, so no commit covers them and the partition's next
            # owner reads them again.
            self.forget_unacked(batch)

    def track_bulk(self, message: Message) -> None:
        """Faust's ``track_message`` for a bulk record: pending its ack, as fix 2 requires.

        Without the sensors' ``on_message_in`` (the worker's LeanMonitor ignores it), which
        costs a chain of calls per record.
        """
        message.tracked = True  # type: ignore[attr-defined]  # see faust_fixes, fix 2
        self._unacked_messages.add(message)

    def ack_bulk(self, messages: list[Message]) -> None:
        """Faust's ``Consumer.ack`` for every record of a processed bulk batch, under one lock.

        The same bookkeeping as Faust's (pinned in tests/unit/test_faust_fixes.py), for
        records this consumer tracked: their topics have acks enabled.
        """
        unacked, committed_offsets = self._unacked_messages, self._committed_offset
        acked_indices, acked_offsets = self._acked_index, self._acked
        newly_acked = 0
        with ack_lock:
            for message in messages:
                if message.acked or not message.tracked:  # type: ignore[attr-defined]
                    continue
                message.acked = True
                tp, offset = message.tp, message.offset
                committed = committed_offsets[tp]
                if committed is None or offset >= committed:
                    acked_index = acked_indices[tp]
                    if offset not in acked_index:
                        unacked.discard(message)
                        acked_index.add(offset)
                        acked_offsets[tp].append(offset)
                        newly_acked += 1
            self._n_acked += newly_acked
            notify(self._waiting_for_ack)

    def forget_unacked(self, messages: list[Message]) -> None:
        """Stop waiting for acks of ``messages`` that were tracked but not acknowledged."""
        unacked = self._unacked_messages
        for message in messages:
            if not message.acked:
                unacked.discard(message)

    async def wait_empty(self) -> None:
        """Faust's wait for outstanding acks on stop, bounded (see STOP_ACK_WAIT_S)."""
        try:
            await asyncio.wait_for(super().wait_empty(), timeout=STOP_ACK_WAIT_S)
        except TimeoutError:
            waiting = sorted((m.topic, m.partition, m.offset) for m in self._unacked_messages)
            log.warning("stopping without the acks of %d records (first: %s); they were not "
                        "committed and will be read again", len(waiting), waiting[:5])
            self._unacked_messages.clear()
            await self.commit_and_end_transactions()


def install(app: Any, topics: set[str], handler: BulkHandler, *,
            settle: Settle | None = None, fetch_max_wait_ms: int = FETCH_MAX_WAIT_MS,
            fetch_min_bytes: int = FETCH_MIN_BYTES) -> None:
    """Make ``app`` deliver ``topics`` in bulk to ``handler`` (call before the worker starts).

    A fetch returns once ``fetch_min_bytes`` of records have arrived, or after
    ``fetch_max_wait_ms`` with what has (Apache Kafka answers then; tansu always waits
    the full time): each fetched batch is one handler call, so these bound how long a
    batch waits to fill. A handler that returns before its batch is acknowledged gives
    ``settle``, which waits for that; it runs before partitions are revoked.
    """
    consumer_cls = type("ShopcastBulkConsumer", (BulkConsumer,),
                        {"bulk_topics": frozenset(topics), "bulk_handler": staticmethod(handler),
                         "bulk_settle": staticmethod(settle) if settle else None,
                         "fetch_max_wait_ms": max(1, fetch_max_wait_ms),
                         "fetch_min_bytes": max(1, fetch_min_bytes)})
    app.transport.Consumer = consumer_cls


class CurrentRecord:
    """Stands in for Faust's current event while a bulk batch is processed.

    Faust's RocksDB store files each write under the partition of the event
    being processed, which it reads from a context variable; the bulk path
    sets this stand-in there for every record.
    """

    __slots__ = ("message", "__weakref__")

    def __init__(self) -> None:
        self.message: Message | None = None

    def enter(self) -> None:
        """Make this the current event of the running task."""
        import weakref

        from faust.streams import _current_event

        _current_event.set(weakref.ref(self))  # type: ignore[arg-type]


def ack_all(consumer: Any, messages: list[Message]) -> None:
    """Acknowledge processed records so their offsets can be committed.

    Bulk records only ever come from the BulkConsumer that :func:`install` put in place.
    """
    consumer.ack_bulk(messages)
