"""The Faust fixes in streams/faust_fixes.py, each against the behaviour it replaces."""

from __future__ import annotations

import asyncio
import hashlib
import inspect
from types import SimpleNamespace

import pytest
from faust.streams import Stream
from faust.transport.consumer import Consumer
from faust.transport.producer import ProducerBuffer
from faust.types import TP

from streams import faust_fixes

faust_fixes.apply()


class FakeConsumer:
    """Just what the seek guard uses: a perform_seek that counts."""

    def __init__(self) -> None:
        self.seeks = 0

    async def perform_seek(self) -> None:
        self.seeks += 1
        setattr(self, faust_fixes._SEEKS, faust_fixes.seek_count(self) + 1)


async def batch(consumer, records, *, seek_after=None, fetch_seeks=False, flow_seeks=False):
    """A fetched batch; optionally a rebalance seeks while it is fetched or delivered.

    Like Faust's getmany, it fetches on its first iteration, where the patched
    _wait_next_records notes the seek count once the flow has resumed.
    """
    if flow_seeks:  # the rebalance's seek while the fetch waits for the flow to resume
        await consumer.perform_seek()
    setattr(consumer, faust_fixes._FETCH_SEEKS, faust_fixes.seek_count(consumer))
    if fetch_seeks:
        await consumer.perform_seek()
    for i, record in enumerate(records):
        yield record
        if i == seek_after:
            await consumer.perform_seek()


async def drain(consumer, fetched):
    return [r async for r in faust_fixes.guarded(consumer, fetched)]


def test_a_batch_without_a_seek_passes_whole():
    consumer = FakeConsumer()
    got = asyncio.run(drain(consumer, batch(consumer, [1, 2, 3])))
    assert got == [1, 2, 3] and consumer.seeks == 0


def test_a_seek_during_delivery_stops_the_batch_and_seeks_again():
    consumer = FakeConsumer()
    before = faust_fixes.Counts.stale_batches
    got = asyncio.run(drain(consumer, batch(consumer, [1, 2, 3, 4], seek_after=1)))
    # Records after the rebalance's seek are stale: not delivered; a second seek re-reads
    # from the committed offsets whatever the first two touched.
    assert got == [1, 2]
    assert consumer.seeks == 2
    assert faust_fixes.Counts.stale_batches == before + 1


def test_a_seek_while_fetching_drops_the_whole_batch():
    consumer = FakeConsumer()
    got = asyncio.run(drain(consumer, batch(consumer, [1, 2], fetch_seeks=True)))
    assert got == [] and consumer.seeks == 2


def test_a_seek_before_the_fetch_started_does_not_make_the_batch_stale():
    # The rebalance's own seek happens while the fetch waits for the flow to resume: the
    # batch fetched afterwards reads from the new positions and is delivered.
    consumer = FakeConsumer()
    got = asyncio.run(drain(consumer, batch(consumer, [1, 2], flow_seeks=True)))
    assert got == [1, 2] and consumer.seeks == 1


def test_a_seek_after_the_last_record_still_seeks_again():
    # The fetch loop sets the read offset of the last record after handing it over; if a
    # seek came in between, that offset is stale and must be reset by another seek.
    consumer = FakeConsumer()
    got = asyncio.run(drain(consumer, batch(consumer, [1, 2], seek_after=1)))
    assert got == [1, 2] and consumer.seeks == 2


def test_faust_methods_are_patched_once():
    faust_fixes.apply()
    faust_fixes.apply()
    assert Consumer.getmany.__qualname__.startswith("apply.")
    assert ProducerBuffer.flush is faust_fixes._flush
    assert faust_fixes.ORIGINALS["getmany"] is not Consumer.getmany


# --- partitions without a committed offset ---------------------------------------------------

class SeekingConsumer:
    """What rewind_uncommitted uses of Faust's consumer."""

    def __init__(self, assigned, committed):
        self._assigned, self._committed_offset = assigned, committed
        self.app = SimpleNamespace(topics=SimpleNamespace(
            acks_enabled_for=lambda topic: topic != "app-windows-changelog"))
        self.sought: dict = {}
        self._read_offset: dict = {}

    def assignment(self):
        return set(self._assigned)

    async def earliest_offsets(self, *tps):
        return {tp: 5 for tp in tps}  # retention removed the first five records

    async def seek_wait(self, offsets):
        self.sought.update(offsets)


def test_a_seek_to_committed_offsets_rewinds_partitions_without_one_to_their_start():
    # aiokafka's seek_to_committed leaves them where they are; a batch dropped there would
    # be lost. Changelog partitions are left to the table recovery.
    events0, events1, events2 = (TP("events", p) for p in range(3))
    changelog = TP("app-windows-changelog", 0)
    consumer = SeekingConsumer([events0, events1, events2, changelog],
                               {events0: 120, events1: 0})
    asyncio.run(faust_fixes.rewind_uncommitted(consumer))
    assert consumer.sought == {events1: 5, events2: 5}


# --- committing before a revocation -----------------------------------------------------------

def test_acknowledged_offsets_are_committed_before_faust_forgets_them(monkeypatch):
    calls = []

    async def faust_revoke(consumer, revoked):  # drops the acks, then runs the app's handler
        calls.append(("revoke", sorted(revoked)))

    async def commit():
        calls.append(("commit",))

    monkeypatch.setitem(faust_fixes.ORIGINALS, "on_partitions_revoked", faust_revoke)
    consumer = SimpleNamespace(in_transaction=False, commit=commit)
    asyncio.run(faust_fixes._on_partitions_revoked(consumer, {TP("events", 1)}))
    assert calls == [("commit",), ("revoke", [TP("events", 1)])]
    # Exactly-once commits inside transactions: left to Faust.
    calls.clear()
    consumer.in_transaction = True
    asyncio.run(faust_fixes._on_partitions_revoked(consumer, {TP("events", 1)}))
    assert calls == [("revoke", [TP("events", 1)])]


# --- acknowledgements ------------------------------------------------------------------------

def test_a_record_a_stream_skipped_during_a_rebalance_is_not_acknowledged(monkeypatch):
    acked = []
    monkeypatch.setitem(faust_fixes.ORIGINALS, "ack", lambda consumer, m: acked.append(m) or True)
    skipped = SimpleNamespace(use_tracking=True, tracked=False)  # never handed to processing
    processed = SimpleNamespace(use_tracking=True, tracked=True)
    assert faust_fixes._ack(None, skipped) is False
    assert faust_fixes._ack(None, processed) is True
    assert acked == [processed]


def test_tracking_a_message_marks_it_so_its_ack_counts(monkeypatch):
    monkeypatch.setitem(faust_fixes.ORIGINALS, "track_message", lambda consumer, m: None)
    message = SimpleNamespace(use_tracking=True, tracked=False)
    faust_fixes._track_message(None, message)
    assert message.tracked


# The fixes replace or wrap these Faust methods, or rely on how they call each other, as they
# are in faust-streaming 0.15.3. A Faust release that changes one needs the fixes reviewed
# against it; update the digest then.
REVIEWED = {
    "Consumer.getmany": "4b168d84882a",
    "Consumer.perform_seek": "0e8c130ff4b0",
    "Consumer._wait_next_records": "6218e1969a63",
    "Consumer.on_partitions_revoked": "d04b7ae72c6f",
    "Consumer._drain_messages": "44a2500309e8",
    "Consumer.ack": "5fcf41cf4515",
    "Consumer.track_message": "217d7f1399a4",
    "Stream._py_aiter": "3a48ee257a65",
    "ProducerBuffer.flush": "26fbebb124ad",
    "ProducerBuffer._send_pending": "4a9d5f932b56",
    "ProducerBuffer._handle_pending": "78d648030fd2",
}
ORIGINAL_NAMES = {"Consumer.getmany": "getmany", "Consumer.perform_seek": "perform_seek",
                  "Consumer._wait_next_records": "wait_next_records",
                  "Consumer.on_partitions_revoked": "on_partitions_revoked",
                  "Consumer.ack": "ack", "Consumer.track_message": "track_message",
                  "ProducerBuffer.flush": "flush", "ProducerBuffer._send_pending": "send_pending"}


@pytest.mark.parametrize("name", sorted(REVIEWED))
def test_the_faust_methods_the_fixes_depend_on_are_the_reviewed_ones(name):
    if name in ORIGINAL_NAMES:
        method = faust_fixes.ORIGINALS[ORIGINAL_NAMES[name]]
    else:
        owner, attr = name.split(".")
        method = getattr({"Consumer": Consumer, "ProducerBuffer": ProducerBuffer,
                          "Stream": Stream}[owner], attr)
        method = getattr(method, "fun", method)  # a mode Service.task
    digest = hashlib.sha256(inspect.getsource(method).encode()).hexdigest()[:12]
    assert digest == REVIEWED[name], (
        f"Faust's {name} changed ({digest}): check that streams/faust_fixes.py still fits "
        "it, then update REVIEWED")


# --- the producer buffer ----------------------------------------------------------------------

class SlowChannel:
    """A channel whose every publish takes ``delay`` seconds (a full aiokafka batch)."""

    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.published: list[int] = []

    async def publish_message(self, fut, wait: bool = False):
        await asyncio.sleep(self.delay)
        self.published.append(fut.n)


async def flush_with(flush, n: int, delay: float) -> tuple[int, int]:
    buffer = ProducerBuffer()
    buffer.app = SimpleNamespace(conf=SimpleNamespace(producer_threaded=False))
    await buffer.start()
    channel = SlowChannel(delay)
    try:
        for i in range(n):
            buffer.put(SimpleNamespace(n=i, message=SimpleNamespace(channel=channel)))
        await flush(buffer)
        return len(channel.published), n
    finally:
        await faust_fixes._flush(buffer)  # stopping with messages queued is an error
        await buffer.stop()


def test_faust_flush_returns_with_messages_unsent_when_a_hand_off_is_slow():
    # Why the fix exists: the commit after this flush would cover unsent messages.
    sent, queued = asyncio.run(flush_with(faust_fixes.ORIGINALS["flush"], 3, 0.25))
    assert sent < queued


def test_the_fixed_flush_waits_for_every_hand_off():
    sent, queued = asyncio.run(flush_with(faust_fixes._flush, 3, 0.25))
    assert sent == queued


# --- bulk acknowledgements (streams/bulk_consumer.py) ------------------------------------------

def test_a_bulk_ack_does_what_one_faust_ack_per_record_does():
    from collections import defaultdict
    from weakref import WeakSet

    from faust.types.tuples import ConsumerMessage as Message

    from streams.bulk_consumer import BulkConsumer

    tps = [TP("events", 0), TP("events", 1)]

    def consumer():
        return SimpleNamespace(
            _unacked_messages=WeakSet(), _committed_offset=defaultdict(lambda: None, {tps[1]: 5}),
            _acked_index=defaultdict(set), _acked=defaultdict(list), _n_acked=0,
            _waiting_for_ack=None,
            app=SimpleNamespace(topics=SimpleNamespace(acks_enabled_for=lambda topic: True)))

    def records(target):
        messages = [Message(tp.topic, tp.partition, offset, 0.0, 0, {}, b"k", b"v", None, tp=tp)
                    for tp in tps for offset in (3, 4, 6, 7)]
        messages.append(Message("events", 0, 4, 0.0, 0, {}, b"k", b"v", None, tp=tps[0]))
        for message in messages:
            message.tracked = message.offset != 7  # 7 never handed to processing (fix 2)
            if message.tracked:
                target._unacked_messages.add(message)
        messages[0].acked = True  # acknowledged before
        return messages

    faust_fixes.apply()  # Consumer.ack with fix 2: untracked records are not acknowledged
    faust_way, bulk_way = consumer(), consumer()
    for message in (one_by_one := records(faust_way)):
        Consumer.ack(faust_way, message)
    BulkConsumer.ack_bulk(bulk_way, at_once := records(bulk_way))
    for name in ("_committed_offset", "_acked_index", "_acked", "_n_acked"):
        assert getattr(bulk_way, name) == getattr(faust_way, name), name
    assert [m.acked for m in at_once] == [m.acked for m in one_by_one]
    assert len(bulk_way._unacked_messages) == len(faust_way._unacked_messages)
    assert bulk_way._n_acked == 3  # 4 and 6 of partition 0 and 6 of partition 1, once each


def test_the_worker_fetches_batches_of_the_configured_size_and_wait(tiny_bundle):
    # Faust builds its aiokafka consumer with a fixed 1.5 s wait and a one-byte minimum;
    # the worker's bulk consumer takes both from the settings instead.
    from streams.app import create_worker
    from streams.settings import load_settings

    worker = create_worker(load_settings(bundle_path=tiny_bundle, bundle_watch_seconds=0,
                                         batch_max_wait_ms=7, batch_min_bytes=4096))

    async def built_consumer():
        consumer = worker.app.consumer._new_consumer_thread()._create_worker_consumer(
            worker.app.transport)
        try:
            return consumer._fetch_max_wait_ms, consumer._fetch_min_bytes
        finally:
            await consumer.stop()

    try:
        assert asyncio.run(built_consumer()) == (7, 4096)
        assert load_settings().batch_min_bytes == 64 * 1024  # the default
    finally:
        worker.executor.shutdown(wait=False)
