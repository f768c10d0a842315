"""Replay: produce an event log to Kafka, keyed by user, at a chosen pace.

Records go out in file order through one producer, so each user's events
keep their order (Kafka keeps order per partition, and a user's key always
maps to the same partition). Pacing is a fixed rate, a multiple of the log's
own timing, or as fast as the broker takes them.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaProducer

from streams.eventlog import LogRecord

# Pacing works in small slices: sleeping per event would cap the rate at the
# event loop's timer resolution.
_SLICE_S = 0.005


@dataclass(frozen=True)
class Pacing:
    """How fast to replay: ``rate`` events/s, ``speed`` times the log's timing, or neither (max)."""

    rate: float | None = None
    speed: float | None = None

    def __post_init__(self) -> None:
        if self.rate is not None and self.speed is not None:
            raise ValueError("choose one of --rate and --speed")
        if (self.rate is not None and self.rate <= 0) or (self.speed is not None
                                                          and self.speed <= 0):
            raise ValueError("--rate and --speed must be positive")


@dataclass
class ReplayResult:
    """What a replay sent."""

    sent: int
    seconds: float
    without_user: int

    @property
    def rate(self) -> float:
        """Achieved events per second."""
        return self.sent / self.seconds if self.seconds > 0 else 0.0


def producer_options() -> dict[str, Any]:
    """Producer settings for replay: batched, ordered, acknowledged by the leader."""
    return {"linger_ms": 5, "max_batch_size": 256 * 1024, "acks": 1,
            "enable_idempotence": False, "request_timeout_ms": 30_000}


async def replay(records: Iterable[LogRecord], *, topic: str, client: dict[str, Any],
                 pacing: Pacing = Pacing(),
                 on_sent: Callable[[LogRecord, float], None] | None = None,
                 transform: Callable[[LogRecord], LogRecord] | None = None) -> ReplayResult:
    """Send ``records`` to ``topic``; ``on_sent(record, send_time)`` observes each one.

    ``transform`` may rewrite a record just before it is sent (the demo uses it
    to stamp events with the current time).
    """
    producer = AIOKafkaProducer(**client, **producer_options())
    await producer.start()
    sent = without_user = 0
    start = time.monotonic()
    first_ts: int | None = None
    last_due = 0.0
    try:
        pending: list[asyncio.Future[Any]] = []
        for record in records:
            due = _due(pacing, sent, record, first_ts, last_due)
            if first_ts is None and record.ts_ms is not None:
                first_ts = record.ts_ms
            last_due = due
            wait = start + due - time.monotonic()
            if wait > _SLICE_S:
                await asyncio.sleep(wait)
            if transform is not None:
                record = transform(record)
            key = record.user_id.encode("utf-8") if record.user_id else None
            without_user += key is None
            pending.append(await producer.send(topic, record.value, key=key))
            sent += 1
            if on_sent is not None:
                on_sent(record, time.time())
            if len(pending) >= 10_000:
                await asyncio.gather(*pending)
                pending.clear()
        await producer.flush()
        await asyncio.gather(*pending)
    finally:
        await producer.stop()
    return ReplayResult(sent, time.monotonic() - start, without_user)


def _due(pacing: Pacing, sent: int, record: LogRecord, first_ts: int | None,
         last_due: float) -> float:
    """Seconds after the start at which this record should go out."""
    if pacing.rate is not None:
        return sent / pacing.rate
    if pacing.speed is not None and record.ts_ms is not None and first_ts is not None:
        # Never earlier than the previous record: file order is kept even when
        # a log's timestamps go backwards.
        return max(last_due, (record.ts_ms - first_ts) / 1000.0 / pacing.speed)
    if pacing.speed is not None:
        return last_due
    return 0.0
