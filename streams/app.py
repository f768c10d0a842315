"""The Faust worker: wiring only. decode -> window -> score -> send.

All per-record logic lives in :mod:`streams.pipeline`, scoring in
:mod:`streams.scorer`, online accuracy in :mod:`streams.online`, the TTL
sweep in :mod:`streams.retention` and the overlap of one chunk's sending with
the next batch's admission in :mod:`streams.finishing`; this module connects
them to Kafka topics, the window table (with its changelog), a thread for
inference and metrics.
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
from faust.streams import Stream
from faust.types import AppT, EventT, Message

from streams import faust_fixes, hot_swap
from streams.bulk_consumer import CurrentRecord, ack_all, install
from streams.bundle import Bundle, load_bundle
from streams.contracts import DeadLetter
from streams.encoding import Encoder
from streams.erasure import ErasureRequest, confirmation
from streams.faust_glue import (
    LeanMonitor,
    Outbox,
    RebalanceSensor,
    TableWindows,
    remember_persisted_offsets,
)
from streams.finishing import Finishing
from streams.kafka_config import faust_broker_settings
from streams.metrics import WorkerMetrics
from streams.online import OnlineAccuracy
from streams.pipeline import Incoming, Pipeline, Ready, Rekey
from streams.retention import SweepResult, sweep
from streams.scorer import Scorer
from streams.settings import Settings
from streams.topics import WINDOW_TABLE, rekey_topic
from streams.window import window_header

log = logging.getLogger("shopcast.worker")

SWEEP_SLICE = 5000  # windows examined between yields to the event loop
PRODUCE_BATCH_BYTES = 256 * 1024  # at most, per partition and request (the broker takes 1 MB)
LAG_INTERVAL_S = 5.0


@dataclass
class Worker:
    """Everything a running worker holds: the Faust app, its table, scorer and pipeline."""

    settings: Settings
    app: faust.App
    table: Any
    scorer: Scorer
    pipeline: Pipeline
    metrics: WorkerMetrics
    online: OnlineAccuracy
    executor: ThreadPoolExecutor = field(
        default_factory=lambda: ThreadPoolExecutor(1, thread_name_prefix="shopcast-scorer"))
    # Last offset read per (topic, partition), for the lag gauge.
    read_offsets: dict[tuple[str, int], int] = field(default_factory=dict)
    # Watches SHOPCAST_BUNDLE_PATH for a new bundle (streams/hot_swap.py).
    models: hot_swap.BundleWatcher | None = None

    def score(self, ready: list[Ready], scored_at: int) -> list[bytes]:
        """Score a batch in the scorer thread; update metrics and online accuracy."""
        started = time.perf_counter()
        events = [r.event for r in ready]
        messages, scores = self.scorer.predict(events, [r.records for r in ready],
                                               scored_at=scored_at)
        self.metrics.inference.observe(time.perf_counter() - started)
        self.metrics.stepped.inc(scores.stepped)
        self.metrics.observe_admitted(ready)
        self.online.observe(events, [r.item_index for r in ready],
                            scores.top_items, scores.next_action, scores.purchase_probability)
        return messages


def create_worker(settings: Settings, bundle: Bundle | None = None,
                  metrics: WorkerMetrics | None = None) -> Worker:
    """Build the Faust app for ``settings`` with its topics, table and agent."""
    faust_fixes.apply()  # without them a rebalance or a crash loses events
    bundle = bundle or load_bundle(settings.bundle_path)
    metrics = metrics or WorkerMetrics()
    metrics.set_model(bundle.model_version, str(bundle.manifest["created_at"]),
                      bundle.horizon_seconds)
    scorer = Scorer(bundle, top_k=settings.top_k, threads=settings.inference_threads,
                    state_users=settings.state_users)
    encoder = Encoder(bundle.spec, bundle.items, bundle.categories)
    secret = settings.pseudonym_secret.get_secret_value().encode() \
        if settings.pseudonym_secret else None
    pipeline = Pipeline(encoder, window_length=settings.window_length,
                        ttl_ms=settings.window_ttl_ms,
                        max_future_ms=settings.max_future_seconds * 1000,
                        redelivery_margin=settings.redelivery_margin,
                        pseudonym_secret=secret, rekey_topic=rekey_topic(settings))
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
        # A chunk's records for one partition in one record batch: a second batch for a
        # partition waits until the first has left, and aiokafka keeps one request in
        # flight, so with the 16 KB default (16 windows or ~27 predictions) a chunk took
        # several produce round trips. A batch grows as records are added.
        producer_max_batch_size=PRODUCE_BATCH_BYTES,
        Monitor=LeanMonitor,
    )
    app.sensors.add(RebalanceSensor(metrics))
    # The app's raw serializers apply to the table: keys and windows are bytes.
    table = app.Table(WINDOW_TABLE, default=None, key_type=bytes, value_type=bytes,
                      partitions=settings.partitions)
    online = OnlineAccuracy(metrics, horizon_ms=bundle.horizon_seconds * 1000,
                            idle_ms=settings.window_ttl_ms)
    worker = Worker(settings, app, table, scorer, pipeline, metrics, online)
    worker.models = hot_swap.watch(worker, bundle)
    _wire(worker)
    return worker


def _wire(worker: Worker) -> None:
    settings, app = worker.settings, worker.app
    events = app.topic(settings.events_topic, rekey_topic(settings),
                       key_type=bytes, value_type=bytes, allow_empty=True)
    track_offsets = settings.store == "rocksdb"

    @app.agent(events, name="shopcast.predict")  # type: ignore[arg-type]
    async def predict(stream: Stream) -> None:
        # The events topics are delivered in bulk to `process` (streams.bulk_consumer);
        # this agent subscribes them, so Faust assigns their partitions together
        # with the table's and tracks acks for them, but receives nothing itself.
        async for _ in stream:  # pragma: no cover - never fed
            pass

    outbox = Outbox(app)
    windows = TableWindows(worker.table, outbox)
    current = CurrentRecord()
    finishing = Finishing()

    async def process(messages: list[Message]) -> None:
        # Admitting a chunk (the event loop) overlaps with scoring the previous one (the
        # scorer thread): on two cores that nearly doubles throughput. The overlap goes on
        # across fetched batches -- the last chunk of a batch finishes while the next batch
        # is admitted -- since at moderate load a fetch is a single chunk.
        if hot_swap.swap_waiting(worker):
            await finishing.settle()  # the old model scores nothing once the new one serves
        hot_swap.between_batches(worker)  # a new bundle takes over between batches only
        current.enter()
        for start in range(0, len(messages), settings.batch_size):
            chunk = messages[start:start + settings.batch_size]
            scoring = _admit_chunk(worker, chunk, windows, outbox, current)
            await finishing.settle()  # the previous chunk's predictions go out first
            finishing.start(_finish(worker, scoring, outbox, track_offsets))

    install(app, {settings.events_topic, rekey_topic(settings)}, process,
            settle=finishing.settle, fetch_max_wait_ms=settings.batch_max_wait_ms,
            fetch_min_bytes=settings.batch_min_bytes)

    erasures = app.topic(settings.erasure_topic, allow_empty=True)
    audit = app.topic(settings.audit_topic)

    @app.agent(erasures, name="shopcast.erase")  # type: ignore[arg-type]
    async def erase(stream: Stream) -> None:
        async for event in stream.events():
            _erase(worker, event, audit, outbox)
            await outbox.send()

    @app.timer(settings.window_sweep_seconds, name="shopcast.expire_windows")
    async def expire_windows() -> None:
        await _sweep(worker, outbox)

    @app.timer(LAG_INTERVAL_S, name="shopcast.consumer_lag")
    async def consumer_lag() -> None:
        await _update_lag(worker)

    if settings.bundle_watch_seconds and worker.models is not None:
        watcher = worker.models

        @app.timer(settings.bundle_watch_seconds, name="shopcast.watch_bundle")
        async def watch_bundle() -> None:
            await watcher.check()

    @app.on_partitions_revoked.connect  # type: ignore[arg-type]
    async def forget_read_offsets(app: AppT, revoked: set[Any], **kwargs: Any) -> None:
        # Another worker may read these partitions on; if one comes back, its lag starts
        # again from the committed position, not from what this worker read before.
        for tp in revoked:
            worker.read_offsets.pop((tp.topic, tp.partition), None)


@dataclass
class Scoring:
    """A chunk of records whose events are being scored in the scorer thread."""

    messages: list[Message]
    ready: list[Ready]
    scored_at: int
    predictions: asyncio.Future[list[bytes]] | None


def _admit_chunk(worker: Worker, messages: list[Message], windows: TableWindows,
                 outbox: Outbox, current: CurrentRecord) -> Scoring:
    """Admit a chunk of records, queue their window updates and start scoring them."""
    ready = _admit_batch(worker, messages, windows, outbox, current)
    # Each window's last state in this chunk, for the changelog. Queued, not sent: the
    # chunk's window updates, dead letters and re-keyed events leave in the same produce
    # request as predictions (this chunk's or the one before's) -- aiokafka builds each
    # request in Python and keeps one in flight.
    windows.flush()
    scored_at = int(time.time() * 1000)
    future = asyncio.get_running_loop().run_in_executor(
        worker.executor, partial(worker.score, ready, scored_at)) if ready else None
    return Scoring(messages, ready, scored_at, future)


async def _finish(worker: Worker, scoring: Scoring, outbox: Outbox, track_offsets: bool
                  ) -> None:
    """Send a scored chunk's predictions and what else it queued, then acknowledge its records."""
    settings, metrics, ready = worker.settings, worker.metrics, scoring.ready
    if scoring.predictions is not None:
        try:
            predictions = await scoring.predictions
        except Exception as exc:  # a model failure must not lose the events
            log.exception("scoring failed for a batch of %d events", len(ready))
            metrics.observe_admitted(ready)
            _dead_letter_batch(worker, ready, outbox, exc, scoring.scored_at)
        else:
            for r, prediction in zip(ready, predictions, strict=True):
                # The event's own partition: the one the user id hashes to when producers
                # key by user (as re-keying does), without hashing it again per message.
                outbox.add(settings.predictions_topic, r.event.user_id.encode("utf-8"),
                           prediction, r.source.partition)
            metrics.predictions.inc(len(predictions))
    sent = await outbox.send()  # also the window changelog, dead letters, re-keyed events
    if track_offsets:
        remember_persisted_offsets(worker.table, sent)
    if ready:
        metrics.observe_sent(time.time(), [r.event.ts_ms for r in ready],
                             [r.source.timestamp_ms for r in ready])
    ack_all(worker.app.consumer, scoring.messages)


def _admit_batch(worker: Worker, messages: list[Message], windows: TableWindows,
                 outbox: Outbox, current: CurrentRecord) -> list[Ready]:
    now_ms = int(time.time() * 1000)
    settings, metrics = worker.settings, worker.metrics
    ready: list[Ready] = []
    for message in messages:
        current.message = message  # a RocksDB store files the write under its partition
        windows.partition = message.partition
        timestamp = message.timestamp
        record = Incoming(message.key, message.value, message.topic, message.partition,
                          message.offset, int(timestamp * 1000) if timestamp else None)
        worker.read_offsets[(message.topic, message.partition)] = message.offset
        outcome = worker.pipeline.admit(record, windows, now_ms=now_ms)
        if isinstance(outcome, Ready):
            ready.append(outcome)  # its metrics are counted in the scorer thread
        elif isinstance(outcome, DeadLetter):
            outbox.add(settings.dlq_topic, message.key, outcome.to_json())
            metrics.dead_letters.labels(outcome.reason).inc()
        elif isinstance(outcome, Rekey):
            outbox.add(rekey_topic(settings), outcome.user_id.encode("utf-8"), outcome.value)
            metrics.rekeyed.inc()
    return ready


def _dead_letter_batch(worker: Worker, ready: list[Ready], outbox: Outbox, exc: Exception,
                       now_ms: int) -> None:
    for r in ready:
        src = r.source
        letter = DeadLetter(src.value, "scoring_failed", f"scoring failed: {exc}", src.topic,
                            src.partition, src.offset, now_ms, key=src.key)
        outbox.add(worker.settings.dlq_topic, src.key, letter.to_json())
        worker.metrics.dead_letters.labels("scoring_failed").inc()


def _erase(worker: Worker, event: EventT, audit: faust.TopicT, outbox: Outbox) -> None:
    """Delete a user's window, queue its tombstone for the changelog, confirm on audit.

    The tombstone goes through the outbox, behind any write of the window still
    queued there, so that the changelog never ends with the erased window.
    """
    request = ErasureRequest.from_json(event.message.value)
    if request is None:
        log.warning("skipped an erasure request that is not one (partition %d offset %d)",
                    event.message.partition, event.message.offset)
        return
    key = worker.pipeline.window_key(request.user_id)
    stored = worker.table.data.pop(key, None)
    header = window_header(stored) if stored is not None else None
    # The window's own partition, not the request's: they differ only if a producer
    # used a custom partitioner, and the tombstone must land where the window is.
    partition = header.partition if header is not None else event.message.partition
    if stored is not None:
        outbox.add(worker.table.changelog_topic.get_topic_name(), key, None, partition)
        worker.metrics.users.dec()
    worker.online.forget(request.user_id)
    # In the scorer's thread, after the batches already handed to it: none of them can
    # leave a state of this user behind.
    worker.executor.submit(worker.scorer.forget, request.user_id)
    worker.metrics.erasures.inc()
    audit.send_soon(key=request.request_id.encode(), value=confirmation(
        request, window_deleted=stored is not None, partition=partition,
        worker=worker.settings.app_id))


def _active_partitions(worker: Worker) -> set[int]:
    assigned = worker.app.assignor.assigned_actives()
    return {tp.partition for tp in assigned if tp.topic == worker.settings.events_topic}


async def _sweep(worker: Worker, outbox: Outbox) -> None:
    """Delete and tombstone windows idle for longer than the TTL; update the users gauge."""
    partitions = _active_partitions(worker)
    if not partitions:
        return
    table, result = worker.table, SweepResult()
    changelog = table.changelog_topic.get_topic_name()
    items = list(table.data.items())  # a snapshot: the agent may write meanwhile
    now_ms = int(time.time() * 1000)
    for start in range(0, len(items), SWEEP_SLICE):
        chunk = items[start:start + SWEEP_SLICE]
        for expired in sweep(chunk, now_ms=now_ms, ttl_ms=worker.settings.window_ttl_ms,
                             partitions=partitions, result=result):
            table.data.pop(expired.key, None)
            outbox.add(changelog, expired.key, None, expired.partition)  # behind queued writes
            worker.metrics.expired.inc()
        await outbox.send()
        await asyncio.sleep(0)
    worker.metrics.users.set(result.live)


async def _update_lag(worker: Worker) -> None:
    consumer = worker.app.consumer
    lags = []
    for tp in worker.app.assignor.assigned_actives():
        if tp.topic not in (worker.settings.events_topic, rekey_topic(worker.settings)):
            continue
        try:
            highwater = consumer.highwater(tp)
            read = worker.read_offsets.get((tp.topic, tp.partition))
            if read is None:
                # Nothing read here since the assignment: the consumer resumes at the committed
                # offset, so an idle partition has no lag (not its whole length after a restart).
                position = await consumer.position(tp)
                if position is None:
                    continue
                read = position - 1
        except Exception:  # noqa: S112 - not known yet right after an assignment
            continue
        if highwater is None:
            # Not fetched yet (a partition just taken over): an exception from a timer would
            # crash the worker, as test_crash.py found.
            continue
        lags.append((tp.topic, tp.partition, highwater - read - 1))
    worker.metrics.set_lag(lags)
