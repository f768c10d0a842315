"""Plain Kafka helpers for integration tests: produce, consume, topics, polling.

Every helper takes a :class:`~streams.settings.Settings` (so it connects exactly as shopcast
does, security included) and has a hard timeout: none of them can hang a test. The synchronous
versions run their own event loop; call the ``a``-prefixed coroutines from async code.

    from tests.integration.kafka_helpers import produce, consume
    produce(settings, settings.events_topic, [("u-1", {"event_id": "e1", ...})])
    records = consume(settings, settings.predictions_topic, count=1, timeout=30)
    json_values(records)  # -> [{"event_id": "e1", ...}]
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any, TypeVar

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.structs import ConsumerRecord

from streams.kafka_config import client_kwargs
from streams.settings import Settings

Key = str | bytes | None
Value = bytes | str | dict | list | None  # dict/list are sent as JSON; None is a tombstone
T = TypeVar("T")


def _bytes(value: Any) -> bytes | None:
    if value is None or isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode()
    return json.dumps(value, separators=(",", ":")).encode()


# --- produce ---------------------------------------------------------------------------------

async def aproduce(settings: Settings, topic: str, records: Iterable[tuple[Key, Value]], *,
                   timeout: float = 30.0, partition: int | None = None,
                   headers: Sequence[tuple[str, bytes]] | None = None) -> int:
    """Send ``(key, value)`` pairs to ``topic`` with acks=all; return how many were sent.

    Keys and str values are UTF-8 encoded, dict/list values JSON-encoded, bytes sent as they are,
    None sent as a tombstone. Raises ``TimeoutError`` if not all are acknowledged in ``timeout``.
    """
    producer = AIOKafkaProducer(**client_kwargs(settings), acks="all",
                                max_request_size=16 * 1024 * 1024,
                                request_timeout_ms=int(timeout * 1000))

    async def send_all() -> int:
        await producer.start()
        futures = [await producer.send(topic, _bytes(value), key=_bytes(key),
                                       partition=partition, headers=list(headers or []))
                   for key, value in records]
        await producer.flush()
        for future in futures:
            await future
        return len(futures)

    try:
        return await asyncio.wait_for(send_all(), timeout)
    finally:
        await producer.stop()


def produce(settings: Settings, topic: str, records: Iterable[tuple[Key, Value]], *,
            timeout: float = 30.0, partition: int | None = None,
            headers: Sequence[tuple[str, bytes]] | None = None) -> int:
    """Synchronous :func:`aproduce`."""
    return asyncio.run(aproduce(settings, topic, list(records), timeout=timeout,
                                partition=partition, headers=headers))


# --- consume ---------------------------------------------------------------------------------

async def assign_from_start(consumer: AIOKafkaConsumer, topic: str, *, patience: float
                            ) -> list[TopicPartition]:
    """Assign every partition of ``topic`` to a started ``consumer``, at its first offset.

    A topic created a moment ago may not be in the broker's metadata yet: wait up to
    ``patience`` seconds for it, then an ``AssertionError`` says it does not exist.
    """
    partitions = consumer.partitions_for_topic(topic)
    deadline = time.monotonic() + patience
    while not partitions and time.monotonic() < deadline:
        await asyncio.sleep(0.2)
        await consumer._client.force_metadata_update()
        partitions = consumer.partitions_for_topic(topic)
    if not partitions:
        raise AssertionError(f"topic {topic!r} does not exist")
    tps = [TopicPartition(topic, p) for p in sorted(partitions)]
    consumer.assign(tps)
    await consumer.seek_to_beginning(*tps)
    return tps


async def aconsume(settings: Settings, topic: str, *, count: int | None = None,
                   timeout: float = 30.0, strict: bool = True) -> list[ConsumerRecord]:
    """Read ``topic`` from the beginning of every partition, without a consumer group.

    With ``count``: return as soon as ``count`` records have arrived (waiting for them up to
    ``timeout`` seconds); with ``strict`` (the default) fewer is an ``AssertionError`` that says
    how many came. Without ``count``: return every record up to the end offsets seen at the
    start (a snapshot of the topic). Records come partition by partition in offset order.
    """
    consumer = AIOKafkaConsumer(**client_kwargs(settings), enable_auto_commit=False,
                                auto_offset_reset="earliest",
                                request_timeout_ms=int(min(timeout, 30) * 1000) + 1000)
    records: list[ConsumerRecord] = []
    deadline = time.monotonic() + timeout

    async def read() -> None:
        await consumer.start()
        tps = await assign_from_start(consumer, topic, patience=min(timeout, 10))
        ends = None if count is not None else await consumer.end_offsets(tps)
        while True:
            if count is not None and len(records) >= count:
                return
            if ends is not None and all([await _at_end(consumer, tp, ends[tp]) for tp in tps]):
                return
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            batch = await consumer.getmany(timeout_ms=int(min(remaining, 0.5) * 1000))
            for tp_records in batch.values():
                records.extend(tp_records)

    try:
        await asyncio.wait_for(read(), timeout + 5)
    except TimeoutError:
        pass
    finally:
        await consumer.stop()
    if strict and count is not None and len(records) < count:
        raise AssertionError(
            f"got {len(records)} of {count} records from {topic!r} within {timeout:.0f} s")
    return records


async def _at_end(consumer: AIOKafkaConsumer, tp: TopicPartition, end: int) -> bool:
    return end == 0 or await consumer.position(tp) >= end


def consume(settings: Settings, topic: str, *, count: int | None = None,
            timeout: float = 30.0, strict: bool = True) -> list[ConsumerRecord]:
    """Synchronous :func:`aconsume`."""
    return asyncio.run(aconsume(settings, topic, count=count, timeout=timeout, strict=strict))


def json_values(records: Iterable[ConsumerRecord]) -> list[Any]:
    """The records' values decoded as JSON (tombstones become None)."""
    return [None if r.value is None else json.loads(r.value) for r in records]


# --- topics ----------------------------------------------------------------------------------

async def acreate_topic(settings: Settings, name: str, partitions: int = 1,
                        config: dict[str, str] | None = None, *, timeout: float = 30.0) -> None:
    """Create one topic (replication from the settings); an existing one is an error."""
    from aiokafka.admin import NewTopic

    admin = AIOKafkaAdminClient(**client_kwargs(settings), request_timeout_ms=int(timeout * 1000))

    async def create() -> None:
        await admin.start()
        response = await admin.create_topics([NewTopic(
            name, partitions, settings.replication_factor, topic_configs=config or {})])
        for error in response.to_object()["topic_errors"]:
            if error["error_code"]:
                raise AssertionError(f"cannot create topic {name!r}: {error}")

    try:
        await asyncio.wait_for(create(), timeout)
    finally:
        await admin.close()


def create_topic(settings: Settings, name: str, partitions: int = 1,
                 config: dict[str, str] | None = None, *, timeout: float = 30.0) -> None:
    """Synchronous :func:`acreate_topic`."""
    asyncio.run(acreate_topic(settings, name, partitions, config, timeout=timeout))


# --- polling ---------------------------------------------------------------------------------

def wait_for(check: Callable[[], T], *, timeout: float = 30.0, interval: float = 0.2,
             message: str = "condition") -> T:
    """Call ``check`` until it returns something truthy and return that; fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"{message} not met within {timeout:.0f} s (last: {result!r})")
        time.sleep(interval)
