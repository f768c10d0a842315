"""Fixes to faust-streaming (0.15) without which a rebalance or a crash loses or repeats events.

Both were found by the reliability tests (``tests/integration/test_scale_out.py`` and
``test_crash.py``) on Apache Kafka, and :func:`apply` installs them once per process before
the worker's app starts.

1. **A batch fetched before a seek is delivered after it.** On every rebalance Faust seeks
   its stream partitions back to their committed offsets (``Consumer.perform_seek``) and
   resets its *read offsets* to match; the fetch loop then skips any record below a
   partition's read offset as already seen. But a batch that was fetched before the seek --
   the fetch was in flight, or the loop was busy delivering the batch's first records while
   the rebalance ran -- goes on being delivered afterwards (``Consumer.getmany`` checks the
   consumer generation only after the fetch returned). Its records raise the read offset
   past the records the seek is about to fetch again, so those are skipped as already seen:
   never processed, never acknowledged, and the committed offset stops in front of them for
   good (faust-streaming issues #318, #681 and #312 describe the symptoms). The scale-out test
   saw it as 8, and in another run 89, consecutive events of one partition without a
   prediction, the partition's committed offset stuck at the first of them.
   The fix: count seeks; a batch during whose fetch or delivery a seek happened is not
   delivered any further, and the partitions are sought to their committed offsets once
   more, so whatever the stale batch touched is fetched again. At worst an event is
   processed twice, which the pipeline's redelivery handling makes harmless (same window,
   same prediction).
   A seek "to the committed offsets" did not rewind a partition that has none yet (aiokafka
   seeks only to committed offsets above 0), so a batch dropped there would have been lost,
   and so would the records Faust itself drops when the generation changes mid-batch. With
   the fix such partitions go back to their beginning, which is where a consumer without a
   committed offset starts (auto_offset_reset=earliest) -- stream partitions only, never a
   table's changelog, whose position the table recovery manages. That seek runs in the
   consumer's thread (``seek_wait``, not ``seek``).

2. **Records skipped because of a rebalance are acknowledged.** A stream that takes a record
   from its queue while a rebalance is under way (flow control suspended, or the record from
   an older consumer generation) skips it -- and acknowledges it like a record a filter
   dropped, although nothing processed it. The commit on revocation then covers it, and the
   next owner starts after it: lost. (The scale-out test lost 232 events this way in one
   run, committed offsets at the end of every partition.) The fix: only records handed to
   processing ("tracked") can be acknowledged; a skipped one is fetched again after the
   rebalance's seek. (Faust also acknowledges untracked records that fail to deserialize;
   shopcast's topics use raw serializers, so that cannot happen here.)

3. **A rebalance forgets the acknowledgements it should commit.** On revocation Faust's
   consumer drops its record of acknowledged offsets for the revoked partitions -- and the
   app's handler commits only afterwards, so nothing processed since the last periodic
   commit (every 2.8 s) is committed, and the next owner processes it again. With the
   eager rebalancing aiokafka does, every partition is revoked on every rebalance: the
   scale-out test saw 1,200 of 2,400 events predicted twice without any crash (the first
   worker's whole start-up backlog; faust-streaming #502 reports the symptom). The fix:
   commit what is acknowledged first, then let Faust revoke (at-least-once mode only).

4. **Offsets are committed before the messages are sent.** Faust flushes its producer before
   committing, but ``ProducerBuffer.flush`` (the queue behind ``send_soon`` and table
   writes) gives up after 0.1 s without progress -- as when aiokafka's batch for a partition
   is full and waits for the broker -- and the commit goes ahead with messages still queued;
   a crash then loses them although their events are committed. The fix: flush waits until
   the queue is empty and the last hand-off to aiokafka is done.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import aclosing
from typing import Any, cast

from faust.transport.consumer import Consumer
from faust.transport.producer import ProducerBuffer

log = logging.getLogger("shopcast.faust_fixes")

_APPLIED = "_shopcast_fixes_applied"
_SEEKS = "_shopcast_seeks"
_INFLIGHT = "_shopcast_inflight"
_FETCH_SEEKS = "_shopcast_fetch_seeks"


class Counts:
    """How often the fixes stepped in, in this process (read by tests)."""

    stale_batches = 0
    untracked_acks = 0


# Faust's own methods, kept for the patched ones to call (and for tests to inspect).
ORIGINALS: dict[str, Any] = {}


def apply() -> None:
    """Patch Faust's consumer and producer buffer; safe to call more than once."""
    if getattr(Consumer, _APPLIED, False):
        return
    ORIGINALS.update(perform_seek=Consumer.perform_seek, getmany=Consumer.getmany,
                     wait_next_records=Consumer._wait_next_records,
                     on_partitions_revoked=Consumer.on_partitions_revoked,
                     ack=Consumer.ack, track_message=Consumer.track_message,
                     send_pending=ProducerBuffer._send_pending, flush=ProducerBuffer.flush)

    async def perform_seek(self: Consumer) -> None:
        # Counted before the seek starts: a batch checked while it runs is already stale.
        setattr(self, _SEEKS, seek_count(self) + 1)
        await ORIGINALS["perform_seek"](self)
        await rewind_uncommitted(self)

    async def wait_next_records(self: Consumer, timeout: float) -> Any:
        # The seek count when the fetch really starts (after waiting for the flow to resume,
        # during which the rebalance's own seek happens): a seek after this makes it stale.
        if not self.flow_active:
            await self.wait(self.can_resume_flow)  # type: ignore[arg-type]
        setattr(self, _FETCH_SEEKS, seek_count(self))
        return await ORIGINALS["wait_next_records"](self, timeout)

    def getmany(self: Consumer, timeout: float) -> AsyncIterator[Any]:
        return guarded(self, ORIGINALS["getmany"](self, timeout))

    perform_seek.__doc__ = ORIGINALS["perform_seek"].__doc__
    getmany.__doc__ = ORIGINALS["getmany"].__doc__
    Consumer.perform_seek = perform_seek  # type: ignore[method-assign]
    Consumer.getmany = getmany  # type: ignore[method-assign,assignment]
    Consumer._wait_next_records = wait_next_records  # type: ignore[method-assign]
    Consumer.on_partitions_revoked = _on_partitions_revoked  # type: ignore[method-assign]
    Consumer.ack = _ack  # type: ignore[method-assign]
    Consumer.track_message = _track_message  # type: ignore[method-assign]
    ProducerBuffer._send_pending = _send_pending  # type: ignore[method-assign]
    ProducerBuffer.flush = _flush  # type: ignore[method-assign]
    setattr(Consumer, _APPLIED, True)


async def guarded(consumer: Any, fetched: AsyncIterator[Any]) -> AsyncIterator[Any]:
    """Pass on ``fetched`` records until ``consumer`` seeks; then stop and seek once more.

    The seek count to compare with is the one when the fetch started (set by the patched
    ``_wait_next_records`` on the consumer during the first iteration).
    """
    seeks = seek_count(consumer)
    async with aclosing(cast(AsyncGenerator[Any, None], fetched)) as records:
        async for item in records:
            seeks = getattr(consumer, _FETCH_SEEKS, seeks)
            if seek_count(consumer) != seeks:
                break
            yield item
    seeks = getattr(consumer, _FETCH_SEEKS, seeks)
    # Checked after the last record too: the fetch loop records a read offset for it only
    # after it was handed over, which may be after a seek.
    if seek_count(consumer) != seeks:
        Counts.stale_batches += 1
        await reseek(consumer)


def seek_count(consumer: Consumer) -> int:
    """How many times ``consumer`` has sought its stream partitions to the committed offsets."""
    return int(getattr(consumer, _SEEKS, 0))


async def rewind_uncommitted(consumer: Consumer) -> None:
    """Seek stream partitions without a committed offset to their beginning.

    After ``perform_seek`` every stream partition is then where a restarted worker would
    begin: its committed offset, or its first record when nothing was committed yet.
    """
    committed = consumer._committed_offset
    acks_enabled_for = consumer.app.topics.acks_enabled_for
    tps = [tp for tp in consumer.assignment()
           if acks_enabled_for(tp.topic) and not committed.get(tp)]
    if not tps:
        return
    earliest = await consumer.earliest_offsets(*tps)
    offsets = {tp: earliest.get(tp) or 0 for tp in tps}
    # seek_wait runs aiokafka's seek in Faust's consumer thread, which owns aiokafka's event
    # loop; Consumer.seek runs it from this thread, which is not thread-safe (asyncio's
    # debug mode refuses it, and the consumer thread may notice late). seek_wait leaves the
    # read offset of a seek to 0 as it was, so set them all as Consumer.seek does: records
    # below a stale read offset would be skipped as already seen.
    await consumer.seek_wait(offsets)
    for tp, offset in offsets.items():
        consumer._read_offset[tp] = offset or None
    log.info("no committed offset yet: read %s from the beginning",
             ", ".join(f"{tp.topic}[{tp.partition}]" for tp in sorted(tps)))


async def reseek(consumer: Consumer) -> None:
    """Seek to the committed offsets again after a stale batch, so nothing it touched is lost."""
    log.warning("a rebalance overtook a fetched batch: dropped the rest of it, seeking to the "
                "committed offsets again (events after them are processed again)")
    try:
        await consumer.perform_seek()
    except Exception as exc:  # a rebalance in progress seeks again when it completes
        log.warning("seeking after a stale batch failed (%r); the rebalance in progress "
                    "seeks when it completes", exc)


async def _on_partitions_revoked(self: Consumer, revoked: Any) -> None:
    """Commit what is acknowledged, then let Faust revoke (which forgets it) (fix 3)."""
    if revoked and not self.in_transaction:
        try:
            await self.commit()
        except Exception as exc:  # the events are processed again: duplicates, not losses
            log.warning("commit before revoking partitions failed (%r); their events since "
                        "the last commit will be processed again", exc)
    await ORIGINALS["on_partitions_revoked"](self, revoked)


def _ack(self: Consumer, message: Any) -> bool:
    """Acknowledge ``message`` -- unless nothing ever took it for processing (fix 2)."""
    if getattr(message, "use_tracking", False) and not message.tracked:
        Counts.untracked_acks += 1
        return False
    return bool(ORIGINALS["ack"](self, message))


def _track_message(self: Consumer, message: Any) -> None:
    """Mark ``message`` as taken for processing (consumers that bypass streams call this)."""
    message.tracked = True
    ORIGINALS["track_message"](self, message)


async def _send_pending(self: ProducerBuffer, fut: Any) -> None:
    """Hand one message to the producer, counting hand-offs in progress for :func:`_flush`."""
    setattr(self, _INFLIGHT, in_flight(self) + 1)
    try:
        await fut.message.channel.publish_message(fut, wait=False)
    finally:
        setattr(self, _INFLIGHT, in_flight(self) - 1)


async def _flush(self: ProducerBuffer) -> None:
    """Wait until every buffered message has been handed to the producer (no time limit).

    Faust's own version returns after 0.1 s without progress; the commit that follows would
    then cover messages that were never sent.
    """
    while self.size or in_flight(self):
        if self.state != "running" and self.size:
            raise RuntimeError("Cannot flush: Producer not Running")
        if self.size:
            await self.flush_atmost(None)
        else:
            await asyncio.sleep(0.001)  # the last hand-off is still in progress


def in_flight(buffer: ProducerBuffer) -> int:
    """Messages being handed from ``buffer`` to the producer right now."""
    return int(getattr(buffer, _INFLIGHT, 0))
