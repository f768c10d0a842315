"""Right to erasure: forget a user's window on request, and confirm it on an audit topic.

``shopcast forget USER_ID`` sends an erasure request to ``shop.erasure``,
keyed by the user id so it reaches the worker that owns the user's window.
The worker deletes the window from its store, writes a tombstone to the
table's changelog (so log compaction removes the user from Kafka too), drops
what it remembers for online accuracy, and confirms on ``shop.erasure.audit``.
The confirmation names the request and a sha256 of the user id, not the id
itself: the audit trail must not keep what was erased.
"""

from __future__ import annotations

import hashlib
import time
import uuid
from dataclasses import dataclass
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from streams.kafka_config import client_kwargs
from streams.settings import Settings


@dataclass(frozen=True, slots=True)
class ErasureRequest:
    """A request to forget one user."""

    user_id: str
    request_id: str
    requested_at: int

    @classmethod
    def new(cls, user_id: str) -> ErasureRequest:
        """A request with a fresh id, stamped now."""
        if not 1 <= len(user_id) <= 128:
            raise ValueError("a user id has 1..128 characters")
        return cls(user_id, uuid.uuid4().hex, int(time.time() * 1000))

    def to_json(self) -> bytes:
        """The request as sent to the erasure topic."""
        return orjson.dumps({"user_id": self.user_id, "request_id": self.request_id,
                             "requested_at": self.requested_at})

    @classmethod
    def from_json(cls, data: bytes | None) -> ErasureRequest | None:
        """Parse a request; None when it is not one (it is then logged and skipped)."""
        try:
            obj: Any = orjson.loads(data or b"")
            user, request = obj["user_id"], obj.get("request_id") or uuid.uuid4().hex
            if not isinstance(user, str) or not 1 <= len(user) <= 128:
                return None
            return cls(user, str(request), int(obj.get("requested_at") or 0))
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            return None


def user_digest(user_id: str) -> str:
    """sha256 of a user id: lets an operator match a confirmation without storing the id."""
    return hashlib.sha256(user_id.encode("utf-8")).hexdigest()


def confirmation(request: ErasureRequest, *, window_deleted: bool, partition: int,
                 worker: str) -> bytes:
    """The audit record a worker writes once the window is gone."""
    return orjson.dumps({
        "request_id": request.request_id,
        "user_sha256": user_digest(request.user_id),
        "window_deleted": window_deleted,
        "partition": partition,
        "requested_at": request.requested_at,
        "erased_at": int(time.time() * 1000),
        "worker": worker,
    })


async def forget(settings: Settings, request: ErasureRequest, *, wait: bool = True,
                 timeout: float = 60.0) -> dict[str, Any] | None:
    """Send an erasure request; with ``wait``, return the worker's confirmation (or None)."""
    client = client_kwargs(settings)
    consumer = None
    if wait:
        # Subscribe before sending so the confirmation cannot slip past.
        consumer = AIOKafkaConsumer(settings.audit_topic, **client, auto_offset_reset="latest",
                                    enable_auto_commit=False)
        await consumer.start()
        await consumer.seek_to_end()
    producer = AIOKafkaProducer(**client, acks="all")
    await producer.start()
    try:
        await producer.send_and_wait(settings.erasure_topic, request.to_json(),
                                     key=request.user_id.encode("utf-8"))
    finally:
        await producer.stop()
    if consumer is None:
        return None
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            batches = await consumer.getmany(timeout_ms=200)
            for records in batches.values():
                for record in records:
                    found = orjson.loads(record.value or b"{}")
                    if found.get("request_id") == request.request_id:
                        return dict(found)
        return None
    finally:
        await consumer.stop()
