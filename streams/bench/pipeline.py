"""``shopcast bench pipeline``: the worker against the ceiling of Python + Kafka, in one run.

On one broker and one simulated log:

(a) *raw*: an aiokafka loop that consumes the events, decodes the JSON, adds
    a field and produces them again -- the most a Python process can move
    through Kafka on this machine;
(b) *worker*: a real ``shopcast worker`` process scoring the same events.

Both start with the whole log already in the topic, so they run flat out;
throughput is events over the time from the first output to the last, and the
CPU each spends per event (and how busy the machine was meanwhile) says where
the difference goes: when the machine is busy throughout, the throughput
ratio is about the inverse ratio of CPU per event. Then,
with the worker warm, events are offered at 25%, 50% and 75% of the worker's
measured maximum and the end-to-end latency (event produced -> prediction
consumed) is measured for each, and, as the floor that Kafka and the clients
alone set, the raw loop's latency at the same offered rates.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

import streams
from streams.bench.cpu import CpuSpan
from streams.embedded_broker import free_port
from streams.eventlog import LogRecord
from streams.kafka_config import client_kwargs
from streams.replay import Pacing, producer_options, replay
from streams.settings import Settings
from streams.topics import TopicsError, delete_topics, ensure_topics
from streams.traffic import simulated_traffic

LOAD_FRACTIONS = (0.25, 0.50, 0.75)


@dataclass
class PipelineResult:
    """Everything ``bench pipeline`` measured."""

    events: int
    raw_eps: float
    worker_eps: float
    latency_ms: dict[str, dict[str, float]] = field(default_factory=dict)
    # The raw loop's latency at the same offered rates: what the broker and the clients
    # cost on their own (two producer lingers, two fetches), without any worker.
    raw_latency_ms: dict[str, dict[str, float]] = field(default_factory=dict)
    broker: str = ""
    # CPU microseconds per event of the raw loop and of the worker process, and the cores
    # the whole machine kept busy meanwhile (broker included when it runs here).
    cpu: dict[str, float | None] = field(default_factory=dict)

    @property
    def throughput_ratio(self) -> float:
        """Worker throughput as a fraction of the raw passthrough's."""
        return self.worker_eps / self.raw_eps if self.raw_eps else 0.0

    def to_json(self) -> dict[str, Any]:
        """The one JSON line ``--json`` prints."""
        return {"events": self.events, "raw_eps": round(self.raw_eps, 1),
                "worker_eps": round(self.worker_eps, 1),
                "throughput_ratio": round(self.throughput_ratio, 4),
                "latency_ms": self.latency_ms, "raw_latency_ms": self.raw_latency_ms,
                "cpu": self.cpu, "broker": self.broker}


def bench_log(n: int) -> list[LogRecord]:
    """``n`` simulated events from new shoppers of the default shop, stamped recently."""
    return list(itertools.islice(simulated_traffic(), n))


async def preload(settings: Settings, topic: str, records: list[LogRecord]) -> None:
    """Put the whole log into ``topic`` before anything consumes it."""
    await replay(records, topic=topic, client=client_kwargs(settings))


async def raw_passthrough(settings: Settings, source: str, target: str, n: int | None,
                          cpu: CpuSpan | None = None) -> float:
    """The ceiling: consume, decode, add a field, produce; returns events per second.

    With ``n`` it reads ``source`` from the start until ``n`` events went through. With
    None it reads only what arrives after it started, until cancelled: the latency floor.
    ``cpu`` (of this process) spans the first record to the last one sent.
    """
    client = client_kwargs(settings)
    options = {"max_poll_records": 5000, "fetch_max_bytes": 64 * 1024 * 1024}
    if n is None:
        # No group to join: assigned at once, from the end, answering each fetch as soon
        # as a record arrives (the worker's fetch wait, 10 ms at most).
        consumer = AIOKafkaConsumer(**client, **options, enable_auto_commit=False,
                                    fetch_max_wait_ms=10)
        await consumer.start()
        tps = [TopicPartition(source, p) for p in range(settings.partitions)]
        consumer.assign(tps)
        await consumer.seek_to_end(*tps)
    else:
        consumer = AIOKafkaConsumer(source, **client, **options,
                                    group_id=f"raw-{time.time_ns()}",
                                    auto_offset_reset="earliest", enable_auto_commit=True)
        await consumer.start()
    producer = AIOKafkaProducer(**client, **producer_options())
    await producer.start()
    done = 0
    first: float | None = None
    try:
        while n is None or done < n:
            batches = await consumer.getmany(timeout_ms=500, max_records=5000)
            for records in batches.values():
                if first is None:
                    first = time.perf_counter()
                    if cpu is not None:
                        cpu.start()
                for record in records:
                    event = orjson.loads(record.value)
                    event["seen_by"] = "raw"
                    await producer.send(target, orjson.dumps(event), key=record.key)
                done += len(records)
        await producer.flush()
        if cpu is not None:
            cpu.stop()
    finally:
        await producer.stop()
        await consumer.stop()
    assert first is not None and n is not None
    return n / (time.perf_counter() - first)


class BenchWorker:
    """A ``shopcast worker`` subprocess whose progress is read from its /metrics."""

    def __init__(self, settings: Settings, log_path: Path) -> None:
        self.settings = settings.model_copy(update={"metrics_port": free_port(),
                                                    "metrics_host": "127.0.0.1"})
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Start the worker process, on the code this benchmark runs."""
        env = {**os.environ, **self.settings.to_environment(), **_same_code()}
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")  # noqa: SIM115 - lives with the process
        self.process = subprocess.Popen(  # noqa: S603 - our own CLI
            [sys.executable, "-m", "streams.cli", "worker"], env=env, stdout=log,
            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)

    def stop(self) -> None:
        """Stop it gracefully (SIGTERM), or kill it after 20 s."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()

    def predictions(self) -> float:
        """``shopcast_predictions_total`` from /metrics (0 until it answers)."""
        if self.process is not None and self.process.poll() is not None:
            raise RuntimeError(f"the worker exited ({self.process.returncode}); see "
                               f"{self.log_path}")
        url = f"http://127.0.0.1:{self.settings.metrics_port}/metrics"
        try:
            with urllib.request.urlopen(url, timeout=2) as response:  # noqa: S310 - loopback
                text = response.read().decode()
        except OSError:
            return 0.0
        for line in text.splitlines():
            if line.startswith("shopcast_predictions_total "):
                return float(line.split()[1])
        return 0.0

    async def wait_for(self, count: float, timeout: float, *, poll: float = 0.05,
                       cpu: CpuSpan | None = None) -> float:
        """Wait until ``count`` predictions.

        ``cpu`` (of the worker process) spans the first poll that saw a prediction to
        the last poll; returns the predictions made within it. Every poll reads the
        worker's /metrics, which costs the worker CPU and the GIL (about a tenth of its
        samples at 20 polls a second): time a worker at full speed with a slow poll and
        :func:`prediction_span` instead.
        """
        at_first_sight: float | None = None  # predictions when the first was seen
        deadline = time.monotonic() + timeout
        while True:
            done = self.predictions()
            if at_first_sight is None and done > 0:
                at_first_sight = done
                if cpu is not None:
                    cpu.start()
            if done >= count:
                assert at_first_sight is not None
                if cpu is not None:
                    cpu.stop()
                return done - at_first_sight
            if time.monotonic() > deadline:
                raise RuntimeError(f"the worker made {done:.0f} of {count:.0f} predictions "
                                   f"within {timeout:.0f} s; see {self.log_path}")
            await asyncio.sleep(poll)


def _same_code() -> dict[str, str]:
    """Environment that makes a ``python -m streams.cli`` child import this process's streams.

    ``-m`` puts the working directory first on the child's path: a benchmark of a
    ``git worktree`` (PYTHONPATH=worktree) run from the main checkout would time
    the main checkout's worker against the worktree's raw loop.
    """
    root = str(Path(streams.__file__).resolve().parent.parent)
    inherited = os.environ.get("PYTHONPATH")
    return {"PYTHONPATH": os.pathsep.join([root, inherited] if inherited else [root]),
            "PYTHONSAFEPATH": "1"}


async def prediction_span(settings: Settings, n: int) -> float:
    """Seconds from the first to the ``n``-th prediction, by the records' append times.

    The worker stamps each prediction record when it adds it to a batch for the broker,
    so this times the worker from its own output, without asking it anything meanwhile.
    """
    consumer = AIOKafkaConsumer(**client_kwargs(settings), enable_auto_commit=False,
                                max_poll_records=10_000, fetch_max_bytes=64 * 1024 * 1024)
    await consumer.start()
    try:
        tps = [TopicPartition(settings.predictions_topic, p) for p in range(settings.partitions)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        stamps: list[int] = []
        deadline = time.monotonic() + 60.0
        while len(stamps) < n:
            batches = await consumer.getmany(timeout_ms=1000)
            stamps.extend(r.timestamp for records in batches.values() for r in records)
            if not batches and time.monotonic() > deadline:
                raise RuntimeError(f"{settings.predictions_topic} holds {len(stamps):,} "
                                   f"predictions, expected {n:,}")
    finally:
        await consumer.stop()
    stamps.sort()
    return max(1e-3, (stamps[n - 1] - stamps[0]) / 1000.0)


async def offered_load(settings: Settings, records: list[LogRecord], rate: float
                       ) -> dict[str, float]:
    """Offer ``records`` at ``rate`` events/s to the events topic; latency percentiles in ms.

    The latency of an event is from its send to the arrival of the record with its
    event id on the predictions topic.
    """
    sent_at: dict[str, float] = {}
    latencies: list[float] = []
    # A short fetch wait, so the measuring consumer adds no latency of its own.
    consumer = AIOKafkaConsumer(**client_kwargs(settings), enable_auto_commit=False,
                                fetch_max_wait_ms=10)
    await consumer.start()
    tps = [TopicPartition(settings.predictions_topic, p) for p in range(settings.partitions)]
    consumer.assign(tps)
    await consumer.seek_to_end(*tps)

    async def collect() -> None:
        while len(latencies) < len(records):
            batches = await consumer.getmany(timeout_ms=100, max_records=5000)
            now = time.time()
            for batch in batches.values():
                for record in batch:
                    event_id = orjson.loads(record.value)["event_id"]
                    sent = sent_at.pop(event_id, None)
                    if sent is not None:
                        latencies.append((now - sent) * 1000.0)

    def on_sent(record: LogRecord, at: float) -> None:
        sent_at[orjson.loads(record.value)["event_id"]] = at

    collector = asyncio.create_task(collect())
    try:
        result = await replay(records, topic=settings.events_topic,
                              client=client_kwargs(settings), pacing=Pacing(rate=rate),
                              on_sent=on_sent)
        await asyncio.wait_for(collector, timeout=120)
    finally:
        collector.cancel()
        await consumer.stop()
    values = np.asarray(latencies)
    return {"offered_eps": round(rate, 1), "achieved_eps": round(result.rate, 1),
            "p50": round(float(np.percentile(values, 50)), 2),
            "p95": round(float(np.percentile(values, 95)), 2),
            "p99": round(float(np.percentile(values, 99)), 2)}


def bench_settings(settings: Settings, run: str) -> Settings:
    """Run-specific topics so a benchmark never reads an earlier run's data."""
    return settings.model_copy(update={
        "app_id": f"bench-{run}", "events_topic": f"bench-{run}.events",
        "predictions_topic": f"bench-{run}.predictions", "dlq_topic": f"bench-{run}.dlq",
        "erasure_topic": f"bench-{run}.erasure", "audit_topic": f"bench-{run}.audit",
        "data_dir": Path(tempfile.mkdtemp(prefix="shopcast-bench-")),
    })


async def run_pipeline_bench(settings: Settings, n: int, *, latency_seconds: float = 15.0,
                             keep_topics: bool = False,
                             say: Callable[[str], None] = print) -> PipelineResult:
    """Measure (a) raw, (b) worker and the latency at three offered loads.

    The run's topics (``bench-<run>.*``, a few hundred MB at 100k events) and its state
    directory are deleted at the end, also after a failure, unless ``keep_topics``.
    """
    run = f"{int(time.time())}"
    settings = bench_settings(settings, run)
    try:
        return await _measure(settings, run, n, latency_seconds, say)
    finally:
        if keep_topics:
            say(f"kept the topics bench-{run}.* and {settings.data_dir}")
        else:
            shutil.rmtree(settings.data_dir, ignore_errors=True)
            try:
                deleted = await delete_topics(settings, prefixes=[f"bench-{run}"], timeout=60)
                say(f"deleted the run's {len(deleted)} topics (bench-{run}.*)")
            except TopicsError as exc:  # never hide the run's own error behind this one
                say(f"could not delete the topics bench-{run}.*: {exc}")


async def _measure(settings: Settings, run: str, n: int, latency_seconds: float,
                   say: Callable[[str], None]) -> PipelineResult:
    raw_in, raw_out = f"bench-{run}.raw-in", f"bench-{run}.raw-out"
    await ensure_topics(settings)
    await ensure_topics(settings.model_copy(update={
        "app_id": f"bench-{run}-raw", "events_topic": raw_in, "predictions_topic": raw_out,
        "dlq_topic": f"{raw_out}.dlq", "erasure_topic": f"{raw_out}.erasure",
        "audit_topic": f"{raw_out}.audit"}))
    say(f"simulating {n:,} events…")
    records = bench_log(n)
    say("preloading both input topics…")
    await preload(settings, raw_in, records)
    await preload(settings, settings.events_topic, records)

    say("(a) raw aiokafka passthrough…")
    raw_cpu = CpuSpan(os.getpid())
    raw_eps = await raw_passthrough(settings, raw_in, raw_out, n, cpu=raw_cpu)
    say(f"    {raw_eps:,.0f} events/s{_cpu_text(raw_cpu, n)}")

    say("(b) shopcast worker…")
    worker = BenchWorker(settings, settings.data_dir / "worker.log")
    worker.start()
    try:
        assert worker.process is not None
        worker_cpu = CpuSpan(worker.process.pid)
        counted = await worker.wait_for(n, timeout=max(300.0, n / 200), poll=1.0,
                                        cpu=worker_cpu)
        # The first prediction marks the worker's start of work; count from there.
        worker_eps = (n - 1) / await prediction_span(settings, n)
        say(f"    {worker_eps:,.0f} events/s (ratio {worker_eps / raw_eps:.3f})"
            f"{_cpu_text(worker_cpu, int(counted))}")
        result = PipelineResult(n, raw_eps, worker_eps, broker=settings.bootstrap_servers)
        result.cpu = {"raw_us_per_event": _rounded(raw_cpu.per_event_us(n)),
                      "worker_us_per_event": _rounded(worker_cpu.per_event_us(int(counted))),
                      "raw_machine_cores": _rounded(raw_cpu.machine_cores(), 2),
                      "worker_machine_cores": _rounded(worker_cpu.machine_cores(), 2),
                      "cores": os.cpu_count()}
        more = simulated_traffic(first_user=2_000_000)
        for fraction in LOAD_FRACTIONS:
            rate = worker_eps * fraction
            count = max(200, int(rate * latency_seconds))
            batch = list(itertools.islice(more, count))
            say(f"    latency at {fraction:.0%} of max ({rate:,.0f} events/s, "
                f"{count:,} events)…")
            result.latency_ms[f"{int(fraction * 100)}%"] = await offered_load(
                settings, batch, rate)
            lat = result.latency_ms[f"{int(fraction * 100)}%"]
            say(f"      p50 {lat['p50']} ms  p95 {lat['p95']} ms  p99 {lat['p99']} ms")
    finally:
        worker.stop()
    say("    the raw loop's latency at the same rates (the floor)…")
    raw = settings.model_copy(update={"events_topic": raw_in, "predictions_topic": raw_out})
    await _raw_latency(raw, result, simulated_traffic(first_user=3_000_000), latency_seconds,
                       say)
    return result


def _cpu_text(cpu: CpuSpan, events: int) -> str:
    per_event, cores = cpu.per_event_us(events), cpu.machine_cores()
    if per_event is None or cores is None:
        return ""
    return (f", {per_event:,.0f} µs of CPU per event in its process, "
            f"{cores:.1f} of {os.cpu_count()} cores busy")


def _rounded(value: float | None, digits: int = 1) -> float | None:
    return None if value is None else round(value, digits)


async def _raw_latency(settings: Settings, result: PipelineResult,
                       more: Iterator[LogRecord], latency_seconds: float,
                       say: Callable[[str], None]) -> None:
    """The raw passthrough's latency at the offered rates the worker was measured at."""
    loop = asyncio.create_task(raw_passthrough(settings, settings.events_topic,
                                               settings.predictions_topic, None))
    try:
        await asyncio.sleep(1.0)  # started, and at the end of the topic
        for level, worker_lat in result.latency_ms.items():
            rate = worker_lat["offered_eps"]
            batch = list(itertools.islice(more, max(200, int(rate * latency_seconds))))
            result.raw_latency_ms[level] = lat = await offered_load(settings, batch, rate)
            say(f"      {level}: p50 {lat['p50']} ms  p95 {lat['p95']} ms  p99 {lat['p99']} ms")
    finally:
        loop.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await loop
