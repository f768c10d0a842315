"""The Faust worker: wiring only. decode -> window -> score -> send.

All per-record logic lives in :mod:`streams.pipeline` and scoring in
:mod:`streams.scorer`; this module connects them to Kafka topics, the window
table (with its changelog) and a thread for inference.
"""

from __future__ import annotations

import asyncio
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import faust
from faust.types import EventT, StreamT

from streams.bundle import Bundle, load_bundle
from streams.contracts import DeadLetter
from streams.encoding import Encoder
from streams.kafka_config import faust_broker_settings
from streams.pipeline import Incoming, Pipeline, Ready, Rekey
from streams.scorer import Scorer
from streams.settings import Settings

log = logging.getLogger("shopcast.worker")

WINDOWS_TABLE = "windows"


def rekey_topic_name(settings: Settings) -> str:
    """The internal topic for events that arrive without their user id as key."""
    return f"{settings.events_topic}.rekeyed"


def changelog_topic_name(settings: Settings) -> str:
    """Faust's name for the window table's changelog topic."""
    return f"{settings.app_id}-{WINDOWS_TABLE}-changelog"


@dataclass
class Worker:
    """Everything a running worker holds: the Faust app, its table, scorer and pipeline."""

    settings: Settings
    app: faust.App
    table: Any
    scorer: Scorer
    pipeline: Pipeline
    executor: ThreadPoolExecutor = field(
        default_factory=lambda: ThreadPoolExecutor(1, thread_name_prefix="shopcast-scorer"))


def create_worker(settings: Settings, bundle: Bundle | None = None) -> Worker:
    """Build the Faust app for ``settings`` with its topics, table and agent."""
    bundle = bundle or load_bundle(settings.bundle_path)
    scorer = Scorer(bundle, top_k=settings.top_k, threads=settings.inference_threads)
    encoder = Encoder(bundle.spec, bundle.items, bundle.categories)
    secret = settings.pseudonym_secret.get_secret_value().encode() \
        if settings.pseudonym_secret else None
    pipeline = Pipeline(encoder, window_length=settings.window_length,
                        ttl_ms=settings.window_ttl_ms,
                        max_future_ms=settings.max_future_seconds * 1000,
                        pseudonym_secret=secret, rekey_topic=rekey_topic_name(settings))
    app = faust.App(
        settings.app_id,
        **faust_broker_settings(settings),
        store="rocksdb://" if settings.store == "rocksdb" else "memory://",
        datadir=str(settings.data_dir),
        topic_partitions=settings.partitions,
        topic_replication_factor=settings.replication_factor,
        processing_guarantee=settings.processing_guarantee,
        table_standby_replicas=settings.standby_replicas,
        consumer_auto_offset_reset="earliest",
        key_serializer="raw",
        value_serializer="raw",
        web_enabled=False,
        # Takeover after a crash waits for the session timeout; the defaults
        # (tens of seconds) leave a dead worker's partitions idle too long.
        broker_session_timeout=10.0,
        broker_heartbeat_interval=1.0,
        broker_rebalance_timeout=30.0,
        stream_recovery_delay=0.0,
        producer_linger=0.005,
    )
    # The app's raw serializers apply to the table: keys and windows are bytes.
    table = app.Table(WINDOWS_TABLE, default=None, key_type=bytes, value_type=bytes,
                      partitions=settings.partitions)
    worker = Worker(settings, app, table, scorer, pipeline)
    _wire(worker)
    return worker


def _wire(worker: Worker) -> None:
    settings, app = worker.settings, worker.app
    events = app.topic(settings.events_topic, rekey_topic_name(settings),
                       key_type=bytes, value_type=bytes, allow_empty=True,
                       key_serializer="raw", value_serializer="raw")
    predictions = app.topic(settings.predictions_topic, key_serializer="raw",
                            value_serializer="raw")
    dead_letters = app.topic(settings.dlq_topic, key_serializer="raw", value_serializer="raw")
    rekeyed = app.topic(rekey_topic_name(settings), key_serializer="raw",
                        value_serializer="raw")

    @app.agent(events, name="shopcast.predict")
    async def predict(stream: StreamT) -> None:
        loop = asyncio.get_running_loop()
        max_wait = settings.batch_max_wait_ms / 1000.0
        async for batch in stream.take_events(settings.batch_size, within=max_wait or 0.001):
            ready = _admit_batch(worker, stream, batch, dead_letters, rekeyed)
            if not ready:
                continue
            scored_at = int(time.time() * 1000)
            try:
                messages = await loop.run_in_executor(worker.executor, partial(
                    worker.scorer.predict, [r.event for r in ready],
                    [r.records for r in ready], scored_at=scored_at))
            except Exception as exc:  # a model failure must not lose the events
                log.exception("scoring failed for a batch of %d events", len(ready))
                for r in ready:
                    src = r.source
                    letter = DeadLetter(src.value, "scoring_failed", f"scoring failed: {exc}",
                                        src.topic, src.partition, src.offset, scored_at,
                                        key=src.key)
                    dead_letters.send_soon(key=src.key, value=letter.to_json())
                continue
            for r, message in zip(ready, messages, strict=True):
                predictions.send_soon(key=r.event.user_id.encode("utf-8"), value=message)


def _admit_batch(worker: Worker, stream: StreamT, batch: list[EventT],
                 dead_letters: faust.TopicT, rekeyed: faust.TopicT) -> list[Ready]:
    now_ms = int(time.time() * 1000)
    ready: list[Ready] = []
    for event in batch:
        # Table writes go to the changelog partition of the *current* event;
        # inside a batch that must be this record's, not the last one buffered.
        stream._set_current_event(event)
        message = event.message
        record = Incoming(message.key, message.value, message.topic, message.partition,
                          message.offset)
        outcome = worker.pipeline.admit(record, worker.table, now_ms=now_ms)
        if isinstance(outcome, Ready):
            ready.append(outcome)
        elif isinstance(outcome, DeadLetter):
            dead_letters.send_soon(key=message.key, value=outcome.to_json())
        elif isinstance(outcome, Rekey):
            rekeyed.send_soon(key=outcome.user_id.encode("utf-8"), value=outcome.value)
    return ready
