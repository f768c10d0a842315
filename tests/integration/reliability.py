"""What the reliability tests check, in one place: the reference run, predictions by event id,
windows from the changelog, and helpers to drive workers under load.

The *reference* is what an uninterrupted run builds, computed in this process with the
worker's own :class:`~streams.pipeline.Pipeline` and :class:`~streams.scorer.Scorer` over a
dict instead of a Faust table. Every scenario (scale-out, crash, broker restart, exactly-once)
compares what the real workers produced on Apache Kafka against it:

* :func:`collect_predictions` reads the predictions topic until every expected event id has a
  prediction (and then to the end, so duplicates already written are counted);
* :class:`Delivery` counts by event id: missing, duplicated, and whether each user's
  predictions came in that user's event order;
* :func:`changelog_windows` reads the window table's changelog (latest value per key) and
  :func:`window_mismatches` compares it with the reference windows.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer
from aiokafka.partitioner import murmur2
from aiokafka.structs import ConsumerRecord

from streams.bundle import load_bundle
from streams.encoding import Encoder
from streams.kafka_config import client_kwargs
from streams.pipeline import Incoming, Pipeline, Ready
from streams.scorer import Scorer
from streams.settings import Settings
from streams.topics import changelog_topic
from streams.window import UserWindow
from tests.integration.kafka_helpers import assign_from_start
from tests.toy_shop import toy_events

NOW_MS = 1_764_400_000_000  # a fixed "now" for the reference (toy events are older)


# --- events ----------------------------------------------------------------------------------

def toy_stream(count: int, *, seed: int = 7) -> list[dict]:
    """The first ``count`` events (time order) of a toy shop large enough to hold them."""
    users = max(10, count // 14 + 50)
    events = toy_events(users=users, seed=seed)
    while len(events) < count:
        users *= 2
        events = toy_events(users=users, seed=seed)
    return events[:count]


def keyed(events: Iterable[dict]) -> list[tuple[str, bytes]]:
    """``(user_id, JSON bytes)`` pairs, as a well-behaved shop producer sends them."""
    return [(e["user_id"], orjson.dumps(e)) for e in events]


def partition_of(key: str | bytes, partitions: int) -> int:
    """The partition Kafka's default partitioner (murmur2) gives ``key``."""
    data = key.encode() if isinstance(key, str) else key
    return (murmur2(data) & 0x7FFFFFFF) % partitions


# --- the reference: an uninterrupted run, in this process ------------------------------------

@dataclass
class Reference:
    """Predictions (without ``scored_at``) by event id, and final windows by table key."""

    predictions: dict[str, dict]
    windows: dict[bytes, UserWindow]
    encoder: Encoder


def reference_run(settings: Settings, events: Sequence[dict], *, batch: int = 256) -> Reference:
    """Run ``events`` through the worker's pipeline and scorer in order, as one worker would."""
    bundle = load_bundle(settings.bundle_path)
    encoder = Encoder(bundle.spec, bundle.items, bundle.categories)
    pipeline = Pipeline(encoder, window_length=settings.window_length,
                        ttl_ms=settings.window_ttl_ms,
                        max_future_ms=settings.max_future_seconds * 1000,
                        redelivery_margin=settings.redelivery_margin)
    scorer = Scorer(bundle, top_k=settings.top_k)
    table: dict[bytes, bytes] = {}
    predictions: dict[str, dict] = {}
    pending: list[Ready] = []

    def flush() -> None:
        messages, _ = scorer.predict([r.event for r in pending], [r.records for r in pending],
                                     scored_at=0)
        for message in messages:
            prediction = orjson.loads(message)
            del prediction["scored_at"]
            predictions[prediction["event_id"]] = prediction
        pending.clear()

    for offset, event in enumerate(events):
        value = orjson.dumps(event)
        record = Incoming(event["user_id"].encode(), value, settings.events_topic,
                          partition_of(event["user_id"], settings.partitions), offset)
        outcome = pipeline.admit(record, table, now_ms=NOW_MS)
        assert isinstance(outcome, Ready), outcome
        pending.append(outcome)
        if len(pending) >= batch:
            flush()
    if pending:
        flush()
    windows = {key: UserWindow.from_bytes(value, encoder) for key, value in table.items()}
    return Reference(predictions, windows, encoder)


def same_prediction(got: dict, expected: dict, *, tolerance: float = 1e-4) -> bool:
    """True when two predictions agree (the model is deterministic up to float noise)."""
    if got["event_id"] != expected["event_id"] or got["user_id"] != expected["user_id"]:
        return False
    if got["model_version"] != expected["model_version"]:
        return False
    if any(abs(got["next_action"][a] - p) > tolerance
           for a, p in expected["next_action"].items()):
        return False
    if abs(got["purchase_probability"] - expected["purchase_probability"]) > tolerance:
        return False
    # Ties between near-equal item scores may swap places; compare the scores by id instead.
    want = {i["item_id"]: i["score"] for i in expected["next_items"][:5]}
    have = {i["item_id"]: i["score"] for i in got["next_items"]}
    return all(abs(have.get(item, -1.0) - score) <= tolerance for item, score in want.items()
               if score > tolerance)


# --- reading what the workers wrote ----------------------------------------------------------

async def _read(settings: Settings, topic: str, *, until: Any = None, timeout: float,
                isolation_level: str = "read_uncommitted") -> list[ConsumerRecord]:
    """Read ``topic`` from the start: until ``until(records)`` holds (then to the end offsets
    of that moment), or, without ``until``, up to the end offsets seen at the start."""
    consumer = AIOKafkaConsumer(**client_kwargs(settings), enable_auto_commit=False,
                                auto_offset_reset="earliest", isolation_level=isolation_level,
                                max_partition_fetch_bytes=4 * 1024 * 1024)
    records: list[ConsumerRecord] = []
    deadline = time.monotonic() + timeout
    await consumer.start()
    try:
        tps = await assign_from_start(consumer, topic, patience=deadline - time.monotonic())
        ends = None if until is not None else await consumer.end_offsets(tps)
        while time.monotonic() < deadline:
            if ends is None and until(records):
                # end_offsets honours the isolation level (the last stable offset).
                ends = await consumer.end_offsets(tps)
            if ends is not None:
                positions = [await consumer.position(tp) for tp in tps]
                if all(p >= ends[tp] for p, tp in zip(positions, tps, strict=True)):
                    return records
            batch = await consumer.getmany(timeout_ms=500, max_records=10_000)
            for tp_records in batch.values():
                records.extend(tp_records)
        return records
    finally:
        await consumer.stop()


def read_topic(settings: Settings, topic: str, *, timeout: float = 60.0,
               isolation_level: str = "read_uncommitted") -> list[ConsumerRecord]:
    """Every record of ``topic`` up to its current end."""
    return asyncio.run(_read(settings, topic, timeout=timeout, isolation_level=isolation_level))


def collect_predictions(settings: Settings, event_ids: Iterable[str], *, timeout: float,
                        isolation_level: str = "read_uncommitted") -> list[ConsumerRecord]:
    """Predictions records, read until every id in ``event_ids`` has one (or ``timeout``)."""
    wanted = set(event_ids)
    seen: set[str] = set()
    counted = 0

    def complete(records: list[ConsumerRecord]) -> bool:
        nonlocal counted
        for record in records[counted:]:
            seen.add(orjson.loads(record.value)["event_id"])
        counted = len(records)
        return wanted <= seen

    return asyncio.run(_read(settings, settings.predictions_topic, until=complete,
                             timeout=timeout, isolation_level=isolation_level))


def changelog_windows(settings: Settings, encoder: Encoder, *, timeout: float = 60.0,
                      isolation_level: str = "read_uncommitted") -> dict[bytes, UserWindow]:
    """The window table as its changelog holds it: the latest value per key, tombstones gone."""
    latest: dict[bytes, bytes | None] = {}
    for record in read_topic(settings, changelog_topic(settings), timeout=timeout,
                             isolation_level=isolation_level):
        latest[record.key] = record.value
    return {key: UserWindow.from_bytes(value, encoder)
            for key, value in latest.items() if value is not None}


def window_mismatches(got: dict[bytes, UserWindow], expected: dict[bytes, UserWindow]
                      ) -> list[str]:
    """Keys whose stored window differs from the reference (records and newest event time)."""
    problems = [f"{key!r}: missing" for key in expected.keys() - got.keys()]
    problems += [f"{key!r}: unexpected" for key in got.keys() - expected.keys()]
    for key in expected.keys() & got.keys():
        a, b = got[key], expected[key]
        if a.records.tobytes() != b.records.tobytes() or a.last_ts_ms != b.last_ts_ms:
            problems.append(f"{key!r}: {len(a)} events (last ts {a.last_ts_ms}) vs "
                            f"{len(b)} (last ts {b.last_ts_ms}) in the reference")
    return problems


# --- counting by event id --------------------------------------------------------------------

@dataclass
class Delivery:
    """Predictions counted by event id against the events that were sent."""

    events: Sequence[dict]
    records: Sequence[ConsumerRecord]
    by_event: dict[str, list[ConsumerRecord]] = field(init=False)

    def __post_init__(self) -> None:
        self.by_event = defaultdict(list)
        for record in self.records:
            self.by_event[orjson.loads(record.value)["event_id"]].append(record)

    @property
    def missing(self) -> list[str]:
        """Ids of events with no prediction."""
        return [e["event_id"] for e in self.events if e["event_id"] not in self.by_event]

    @property
    def duplicates(self) -> Counter[str]:
        """Event id -> number of extra predictions (only ids predicted more than once)."""
        return Counter({k: len(v) - 1 for k, v in self.by_event.items() if len(v) > 1})

    @property
    def unexpected(self) -> set[str]:
        """Predictions for event ids that were never sent."""
        return self.by_event.keys() - {e["event_id"] for e in self.events}

    def order_violations(self) -> list[str]:
        """Users whose predictions, read in partition order, are not in their event order.

        A redelivery replays a suffix of a partition, so duplicates are allowed; what must
        hold is that the first prediction of each event comes in the user's event order and
        that every prediction sits on the user's partition.
        """
        expected: dict[str, list[str]] = defaultdict(list)
        for event in self.events:
            expected[event["user_id"]].append(event["event_id"])
        firsts: dict[str, list[str]] = defaultdict(list)
        seen: set[str] = set()
        partitions: dict[str, set[int]] = defaultdict(set)
        for record in sorted(self.records, key=lambda r: (r.partition, r.offset)):
            prediction = orjson.loads(record.value)
            partitions[prediction["user_id"]].add(record.partition)
            if prediction["event_id"] not in seen:
                seen.add(prediction["event_id"])
                firsts[prediction["user_id"]].append(prediction["event_id"])
        bad = [f"{user}: predictions on partitions {sorted(p)}"
               for user, p in partitions.items() if len(p) > 1]
        bad += [f"{user}: {firsts[user][:6]}... vs events {ids[:6]}..."
                for user, ids in expected.items() if firsts.get(user, []) != ids]
        return bad

    def mismatches(self, reference: Reference) -> list[str]:
        """Event ids whose prediction (any copy) differs from the uninterrupted run's."""
        bad = []
        for event_id, records in self.by_event.items():
            expected = reference.predictions.get(event_id)
            if expected is None:
                continue
            for record in records:
                if not same_prediction(orjson.loads(record.value), expected):
                    bad.append(event_id)
                    break
        return bad

    def summary(self) -> str:
        """One line for test output and reports."""
        dup = self.duplicates
        return (f"{len(self.events)} events, {len(self.records)} predictions, "
                f"{len(self.missing)} missing, {len(dup)} events duplicated "
                f"({sum(dup.values())} extra predictions)")


# --- driving workers -------------------------------------------------------------------------

class BackgroundProducer(threading.Thread):
    """Produce records from a thread at about ``rate`` records/s (0: as fast as possible).

    One idempotent producer sends everything, so a broker restart meanwhile only delays
    records: aiokafka reconnects and retries, and idempotence keeps retries from writing a
    record twice (a duplicate in the events topic would be counted as a redelivery).
    """

    def __init__(self, settings: Settings, topic: str, records: Sequence[tuple[Any, Any]], *,
                 rate: float = 0.0, chunk: int = 500) -> None:
        super().__init__(daemon=True, name="background-producer")
        self.settings, self.topic, self.records = settings, topic, records
        self.rate, self.chunk = rate, chunk
        self.sent = 0
        self.error: BaseException | None = None

    def run(self) -> None:
        """Send every record in chunks, pacing between chunks."""
        try:
            asyncio.run(self._send())
        except BaseException as exc:  # reported by join_checked
            self.error = exc

    async def _send(self) -> None:
        from aiokafka import AIOKafkaProducer

        producer = AIOKafkaProducer(**client_kwargs(self.settings), acks="all",
                                    enable_idempotence=True, request_timeout_ms=120_000,
                                    max_request_size=16 * 1024 * 1024)
        await producer.start()
        try:
            began = time.monotonic()
            for start in range(0, len(self.records), self.chunk):
                part = self.records[start:start + self.chunk]
                futures = [await producer.send(self.topic, _as_bytes(value), key=_as_bytes(key))
                           for key, value in part]
                await producer.flush()
                for future in futures:
                    await future
                self.sent += len(part)
                if self.rate:
                    ahead = self.sent / self.rate - (time.monotonic() - began)
                    if ahead > 0:
                        await asyncio.sleep(ahead)
        finally:
            await producer.stop()

    def join_checked(self, timeout: float = 300.0) -> None:
        """Wait for the thread; re-raise what it failed with."""
        self.join(timeout)
        if self.is_alive():
            raise AssertionError(f"producer still running after {timeout:.0f} s "
                                 f"({self.sent} of {len(self.records)} sent)")
        if self.error is not None:
            raise self.error


def _as_bytes(value: Any) -> bytes | None:
    if value is None or isinstance(value, bytes):
        return value
    return value.encode() if isinstance(value, str) else orjson.dumps(value)


def assigned_partitions(metrics_text: str, topic: str) -> set[int]:
    """Partitions of ``topic`` a worker reports in its consumer-lag gauge (its active ones)."""
    found = set()
    for line in metrics_text.splitlines():
        if line.startswith("shopcast_consumer_lag_messages{") and f'topic="{topic}"' in line:
            label = line.split('partition="', 1)[1].split('"', 1)[0]
            found.add(int(label))
    return found


def log_path(tmp_path: Path, name: str) -> Path:
    """Where a worker of this test writes its log."""
    return tmp_path / f"{name}.log"


# --- the crash scenario (test_crash.py and benchmarks/crash_recovery.py) ---------------------

@dataclass
class CrashRun:
    """What a SIGKILL in the middle of a replay did, counted by event id."""

    delivery: Delivery
    victim_partitions: set[int]
    kill_ms: int
    killed_after: int  # predictions the victim had sent when it was killed
    takeover_ms: int | None  # kill -> first prediction by the survivor on a victim partition
    duplicated_offsets: dict[int, list[int]]  # partition -> event offsets predicted twice
    window_problems: list[str]
    reference: Reference

    def report(self) -> str:
        """The figures, one line."""
        spans = {p: f"{o[0]}..{o[-1]}" for p, o in sorted(self.duplicated_offsets.items())}
        return (f"{self.delivery.summary()}; victim owned partitions "
                f"{sorted(self.victim_partitions)}, killed after {self.killed_after} of its "
                f"predictions; takeover {self.takeover_ms} ms; duplicated offsets by "
                f"partition {spans}; {len(self.window_problems)} windows differ")


def owned_partitions(workers: Sequence[Any], topic: str, partitions: int,
                     timeout: float = 180.0) -> list[set[int]]:
    """Wait until the workers' active partitions of ``topic`` are disjoint, cover all and are
    spread evenly; return them (read from each worker's consumer-lag gauge)."""
    from tests.integration.kafka_helpers import wait_for

    share = partitions // len(workers)

    def split() -> list[set[int]] | None:
        owned = [assigned_partitions(w.wait_for_metrics(), topic) for w in workers]
        covered = set().union(*owned)
        even = all(share <= len(o) <= share + 1 for o in owned)
        disjoint = sum(len(o) for o in owned) == len(covered)
        return owned if even and disjoint and len(covered) == partitions else None

    return wait_for(split, timeout=timeout, interval=1.0,
                    message=f"{len(workers)} workers sharing {partitions} partitions")


def crash_run(settings: Settings, events: Sequence[dict], reference: Reference,
              tmp_path: Path, *, kill_after: float = 0.3, timeout: float = 300.0,
              isolation_level: str = "read_uncommitted") -> CrashRun:
    """Two workers share a replay of ``events``; SIGKILL one after it has predicted
    ``kill_after`` of its share; collect everything once the survivor has taken over.

    Predictions and the changelog are read with ``isolation_level`` (``read_committed`` for
    exactly-once, as its consumers must)."""
    from tests.integration.kafka_helpers import wait_for
    from tests.integration.workers import WorkerProcess, metric_value

    if os.environ.get("SHOPCAST_TEST_WORKER_LOG_LEVEL"):  # e.g. INFO, to debug a failure
        settings = settings.model_copy(
            update={"log_level": os.environ["SHOPCAST_TEST_WORKER_LOG_LEVEL"]})
    victim, survivor = (WorkerProcess(settings, tmp_path / f"{name}.log", name=name)
                        for name in ("victim", "survivor"))
    records = keyed(events)
    try:
        victim.start()
        survivor.start()
        owned = owned_partitions([victim, survivor], settings.events_topic,
                                 settings.partitions)
        replay = BackgroundProducer(settings, settings.events_topic, records)
        replay.start()
        threshold = max(1, int(kill_after * len(events) / 2))
        wait_for(lambda: metric_value(victim.metrics(), "shopcast_predictions_total")
                 >= threshold, timeout=timeout, interval=0.05,
                 message=f"the victim predicting {threshold} events")
        killed_after = int(metric_value(victim.metrics(), "shopcast_predictions_total"))
        kill_ms = int(time.time() * 1000)
        victim.kill()
        replay.join_checked(timeout)
        got = collect_predictions(settings, [e["event_id"] for e in events], timeout=timeout,
                                  isolation_level=isolation_level)
        survivor.assert_alive()
    finally:
        victim.kill()
        survivor.stop()

    delivery = Delivery(events, got)
    victim_partitions = owned[0]
    takeover = [json_ts for record in got
                if record.partition in victim_partitions
                and (json_ts := orjson.loads(record.value)["scored_at"]) > kill_ms]
    offsets = {orjson.loads(r.value)["event_id"]: (r.partition, r.offset)
               for r in read_topic(settings, settings.events_topic, timeout=timeout)}
    duplicated: dict[int, list[int]] = defaultdict(list)
    for event_id in delivery.duplicates:
        partition, offset = offsets[event_id]
        duplicated[partition].append(offset)
    stored = changelog_windows(settings, reference.encoder, timeout=timeout,
                               isolation_level=isolation_level)
    problems = window_mismatches(stored, reference.windows)
    return CrashRun(delivery, victim_partitions, kill_ms, killed_after,
                    min(takeover) - kill_ms if takeover else None,
                    {p: sorted(o) for p, o in duplicated.items()}, problems, reference)
