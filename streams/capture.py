"""Capture: write what a topic holds to a JSON Lines file.

Each record's value is written as one line when it is a one-line UTF-8 JSON
document (so a captured ``shop.events`` is itself a replayable log, and a
captured ``shop.predictions`` is a file of predictions). Other values are
written wrapped with their coordinates and base64 bytes, so nothing is lost.
With ``envelope=True`` every record is wrapped that way.
"""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.structs import ConsumerRecord

from streams.eventlog import LogWriter


@dataclass
class CaptureResult:
    """What a capture wrote."""

    written: int
    wrapped: int


def envelope(record: ConsumerRecord) -> dict[str, Any]:
    """A record with its coordinates, key and value (text when UTF-8, else base64)."""
    out: dict[str, Any] = {"topic": record.topic, "partition": record.partition,
                           "offset": record.offset, "timestamp": record.timestamp}
    for name in ("key", "value"):
        data = getattr(record, name)
        if data is None:
            out[name] = None
            continue
        try:
            out[name] = data.decode("utf-8")
        except UnicodeDecodeError:
            out[name] = None
            out[f"{name}_base64"] = base64.b64encode(data).decode("ascii")
    return out


def _is_json_line(value: bytes | None) -> bool:
    if not value or b"\n" in value:
        return False
    try:
        orjson.loads(value)
    except orjson.JSONDecodeError:
        return False
    return True


async def capture(topic: str, writer: LogWriter, *, client: dict[str, Any],
                  from_beginning: bool = True, max_records: int | None = None,
                  idle_seconds: float = 5.0, envelope_all: bool = False,
                  on_record: Callable[[ConsumerRecord], None] | None = None) -> CaptureResult:
    """Read ``topic`` (all partitions, no consumer group) until ``max_records`` or idle."""
    consumer = AIOKafkaConsumer(**client, enable_auto_commit=False,
                                auto_offset_reset="earliest" if from_beginning else "latest")
    await consumer.start()
    written = wrapped = 0
    try:
        partitions = consumer.partitions_for_topic(topic)
        if not partitions:
            await consumer._client.force_metadata_update()  # new topics need a fresh view
            partitions = consumer.partitions_for_topic(topic)
        if not partitions:
            raise ValueError(f"topic {topic!r} does not exist on the broker; check the name "
                             "with 'shopcast topics list'")
        consumer.assign([TopicPartition(topic, p) for p in sorted(partitions)])
        if from_beginning:
            await consumer.seek_to_beginning()
        else:
            await consumer.seek_to_end()
        last_data = time.monotonic()
        while max_records is None or written < max_records:
            batches = await consumer.getmany(timeout_ms=200, max_records=5000)
            if not any(batches.values()):
                if time.monotonic() - last_data > idle_seconds:
                    break
                continue
            last_data = time.monotonic()
            for records in batches.values():
                for record in records:
                    if max_records is not None and written >= max_records:
                        break
                    if envelope_all or not _is_json_line(record.value):
                        writer.write(envelope(record))
                        wrapped += 1
                    else:
                        writer.write(record.value)
                    written += 1
                    if on_record is not None:
                        on_record(record)
            await asyncio.sleep(0)
    finally:
        await consumer.stop()
    return CaptureResult(written, wrapped)
