"""``shopcast demo``: the whole pipeline on one machine, with a live view.

Starts the embedded broker (unless ``SHOPCAST_BOOTSTRAP_SERVERS`` names one),
creates run-specific topics, starts a worker process with the default bundle,
sends simulated traffic at a steady rate (with a few hostile records), and
watches predictions and dead letters come back: throughput, end-to-end
latency (event produced -> prediction consumed) and sample predictions.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import numpy as np
import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition

from streams.embedded_broker import EmbeddedBroker, free_port
from streams.eventlog import LogRecord
from streams.kafka_config import client_kwargs
from streams.replay import Pacing, replay
from streams.settings import Settings
from streams.topics import ensure_topics
from streams.traffic import simulated_traffic

WORKER_READY_TIMEOUT_S = 180.0
DRAIN_TIMEOUT_S = 60.0


@dataclass
class Tally:
    """What the demo has sent and seen so far."""

    started: float = field(default_factory=time.monotonic)
    sent_at: dict[str, float] = field(default_factory=dict)
    valid_sent: int = 0
    hostile_sent: int = 0
    predictions: int = 0
    duplicates: int = 0
    dead_letters: int = 0
    latencies_ms: list[float] = field(default_factory=list)
    samples: list[dict[str, Any]] = field(default_factory=list)
    seen: set[str] = field(default_factory=set)

    def on_sent(self, record: LogRecord, at: float) -> None:
        """Replay callback: remember when each valid event went out."""
        if record.user_id is None:
            self.hostile_sent += 1
            return
        self.valid_sent += 1
        self.sent_at[orjson.loads(record.value)["event_id"]] = at

    def on_prediction(self, value: bytes, at: float) -> None:
        """A prediction arrived: count it, measure its latency, keep a few as samples."""
        prediction = orjson.loads(value)
        event_id = prediction["event_id"]
        if event_id in self.seen:
            self.duplicates += 1
            return
        self.seen.add(event_id)
        self.predictions += 1
        sent = self.sent_at.pop(event_id, None)
        if sent is not None:
            self.latencies_ms.append((at - sent) * 1000.0)
        self.samples = (self.samples + [prediction])[-3:]

    def percentile(self, q: float) -> float | None:
        """Latency percentile in ms over all predictions so far."""
        if not self.latencies_ms:
            return None
        return float(np.percentile(np.asarray(self.latencies_ms), q))

    def summary(self) -> dict[str, Any]:
        """The line ``--json`` prints."""
        p50, p99 = self.percentile(50), self.percentile(99)
        return {"events": self.valid_sent, "predictions": self.predictions,
                "dead_letters": self.dead_letters,
                "p50_ms": None if p50 is None else round(p50, 2),
                "p99_ms": None if p99 is None else round(p99, 2),
                "hostile_sent": self.hostile_sent, "duplicates": self.duplicates}


def demo_settings(settings: Settings, bootstrap: str) -> Settings:
    """Run-specific topics and app id, so a demo never mixes with earlier data on a broker."""
    run = f"demo-{int(time.time())}"
    return settings.model_copy(update={
        "bootstrap_servers": bootstrap,
        "app_id": f"shopcast-{run}",
        "events_topic": f"{run}.shop.events",
        "predictions_topic": f"{run}.shop.predictions",
        "dlq_topic": f"{run}.shop.events.dlq",
        "erasure_topic": f"{run}.shop.erasure",
        "audit_topic": f"{run}.shop.erasure.audit",
    })


def worker_environment(settings: Settings) -> dict[str, str]:
    """The environment that makes a ``shopcast worker`` process use these settings."""
    return {**os.environ, **settings.to_environment()}


class Demo:
    """One demo run: broker, topics, worker process, traffic and the live view."""

    def __init__(self, settings: Settings, *, duration: float | None, rate: float,
                 out: IO[str], external_broker: bool) -> None:
        self.base = settings
        self.duration = duration
        self.rate = rate
        self.out = out
        self.external = external_broker
        self.tally = Tally()
        self.broker: EmbeddedBroker | None = None
        self.worker: subprocess.Popen[bytes] | None = None
        self.settings = settings
        self.stopping = asyncio.Event()
        self.log_dir = Path(settings.data_dir) / "demo-logs"
        self._drawn = 0

    async def run(self) -> dict[str, Any]:
        """Run until the duration ends or Ctrl-C; return the summary."""
        tasks: list[asyncio.Task] = []
        try:
            self._start_broker()
            await ensure_topics(self.settings)
            self._start_worker()
            tasks.append(asyncio.create_task(self._watch()))
            await self._warm_up()
            tasks.append(asyncio.create_task(self._view()))
            await self._send_traffic()
            await self._drain()
            await _cancel(tasks)
            self._render(final=True)
            return self.tally.summary()
        finally:
            # Also when the worker died: the watcher's consumer must close on a live loop.
            await _cancel(tasks)
            self._stop_worker()
            if self.broker is not None:
                self.broker.stop()

    def _say(self, text: str) -> None:
        print(text, file=self.out, flush=True)

    def _start_broker(self) -> None:
        if self.external:
            self.settings = demo_settings(self.base, self.base.bootstrap_servers)
            self._say(f"using the broker at {self.base.bootstrap_servers}")
            return
        self.log_dir.mkdir(parents=True, exist_ok=True)
        port = free_port()
        self.broker = EmbeddedBroker(port, log_path=self.log_dir / "tansu.log")
        self.broker.start()
        took = self.broker.wait_ready()
        self.settings = demo_settings(self.base, self.broker.bootstrap)
        self._say(f"embedded broker (tansu) ready on {self.broker.bootstrap} in {took:.1f} s")

    def _start_worker(self) -> None:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log = open(self.log_dir / "worker.log", "ab")  # noqa: SIM115 - closed with the process
        self.worker = subprocess.Popen(  # noqa: S603 - our own CLI
            [sys.executable, "-m", "streams.cli", "worker"], env=worker_environment(self.settings),
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        self._say(f"worker started (pid {self.worker.pid}); /metrics on "
                  f"http://{self.settings.metrics_host}:{self.settings.metrics_port}/metrics; "
                  f"logs in {self.log_dir}")

    def _stop_worker(self) -> None:
        if self.worker is None or self.worker.poll() is not None:
            return
        self.worker.send_signal(signal.SIGTERM)
        try:
            self.worker.wait(20)
        except subprocess.TimeoutExpired:
            self.worker.kill()
            self.worker.wait()

    def _check_worker(self) -> None:
        if self.worker is not None and self.worker.poll() is not None:
            tail = (self.log_dir / "worker.log").read_text(errors="replace").splitlines()[-15:]
            raise RuntimeError(f"the worker exited with code {self.worker.returncode}; its log "
                               "ends with:\n" + "\n".join(tail))

    async def _warm_up(self) -> None:
        """Send the first event and wait for its prediction: the worker has joined and scores."""
        self._say("waiting for the worker to join the consumer group and score a first event…")
        first = next(self._traffic())
        await replay([first], topic=self.settings.events_topic,
                     client=client_kwargs(self.settings), on_sent=self.tally.on_sent)
        started = time.monotonic()
        while self.tally.predictions == 0:
            self._check_worker()
            if time.monotonic() - started > WORKER_READY_TIMEOUT_S:
                raise RuntimeError(f"no prediction within {WORKER_READY_TIMEOUT_S:.0f} s; see "
                                   f"{self.log_dir / 'worker.log'}")
            await asyncio.sleep(0.1)
        self.tally.latencies_ms.clear()  # start-up time is not latency
        self._say(f"worker ready after {time.monotonic() - started:.1f} s; sending traffic at "
                  f"{self.rate:g} events/s" + (f" for {self.duration:g} s" if self.duration
                                                else " until Ctrl-C"))

    def _traffic(self) -> Iterator[LogRecord]:
        return simulated_traffic(hostile_every=200)

    async def _send_traffic(self) -> None:
        self.tally.started = time.monotonic()
        deadline = None if self.duration is None else time.monotonic() + self.duration

        def until_done() -> Iterator[LogRecord]:
            for record in self._traffic():
                if self.stopping.is_set() or (deadline and time.monotonic() >= deadline):
                    return
                yield record

        await replay(until_done(), topic=self.settings.events_topic,
                     client=client_kwargs(self.settings), pacing=Pacing(rate=self.rate),
                     on_sent=self.tally.on_sent)

    async def _drain(self) -> None:
        """Wait until every valid event sent has its prediction (or progress stops)."""
        last, last_change = -1, time.monotonic()
        while self.tally.predictions < self.tally.valid_sent:
            self._check_worker()
            if self.tally.predictions != last:
                last, last_change = self.tally.predictions, time.monotonic()
            if time.monotonic() - last_change > DRAIN_TIMEOUT_S:
                self._say(f"gave up waiting: {self.tally.valid_sent - self.tally.predictions} "
                          "events have no prediction")
                return
            await asyncio.sleep(0.1)

    async def _watch(self) -> None:
        """Consume predictions and dead letters for the whole run."""
        # A short fetch wait: tansu answers a fetch only when the wait is over, and
        # the wait would otherwise show up as end-to-end latency.
        consumer = AIOKafkaConsumer(**client_kwargs(self.settings), enable_auto_commit=False,
                                    auto_offset_reset="earliest", fetch_max_wait_ms=10)
        await consumer.start()
        try:
            tps = [TopicPartition(t, p) for t in (self.settings.predictions_topic,
                                                  self.settings.dlq_topic)
                   for p in range(self.settings.partitions)]
            consumer.assign(tps)
            await consumer.seek_to_beginning(*tps)
            while True:
                batches = await consumer.getmany(timeout_ms=100, max_records=2000)
                now = time.time()
                for tp, records in batches.items():
                    for record in records:
                        if tp.topic == self.settings.dlq_topic:
                            self.tally.dead_letters += 1
                        elif record.value is not None:
                            self.tally.on_prediction(record.value, now)
        finally:
            await consumer.stop()

    async def _view(self) -> None:
        while True:
            await asyncio.sleep(1.0 if self.out.isatty() else 5.0)
            self._render()

    def _render(self, final: bool = False) -> None:
        t = self.tally
        elapsed = max(1e-9, time.monotonic() - t.started)
        p50, p99 = t.percentile(50), t.percentile(99)
        lat = "-" if p50 is None or p99 is None else f"p50 {p50:.1f} ms  p99 {p99:.1f} ms"
        lines = [
            f"{'done' if final else 'running'} {elapsed:5.0f} s | sent {t.valid_sent:,} events "
            f"({t.valid_sent / elapsed:,.0f}/s) + {t.hostile_sent} hostile | predictions "
            f"{t.predictions:,} ({t.predictions / elapsed:,.0f}/s) | dead letters "
            f"{t.dead_letters} | end-to-end {lat}",
        ]
        for p in t.samples[-2:]:
            action = max(p["next_action"], key=p["next_action"].get)
            items = ", ".join(f"{i['item_id']} ({i['score']:.2f})" for i in p["next_items"][:3])
            lines.append(f"  {p['user_id']}: next {action} "
                         f"{p['next_action'][action]:.2f} | items {items} | "
                         f"P(buy 24h) {p['purchase_probability']:.2f} | back in "
                         f"{p['next_event_seconds']:,.0f} s")
        if self.out.isatty() and not final:
            # Redraw the block in place: up over the last one, clear each line.
            if self._drawn:
                self.out.write(f"\x1b[{self._drawn}F")
            self.out.write("".join(f"\x1b[2K{line}\n" for line in lines))
            self.out.flush()
            self._drawn = len(lines)
        else:
            self._say("\n".join(lines))


async def _cancel(tasks: list[asyncio.Task]) -> None:
    """Cancel ``tasks`` and wait for each to finish its cleanup."""
    for task in tasks:
        task.cancel()
    for task in tasks:
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task
    tasks.clear()


def run_demo(settings: Settings, *, duration: float | None, rate: float, out: IO[str],
             external_broker: bool) -> dict[str, Any]:
    """Run a demo to completion (or Ctrl-C) and return its summary."""
    demo = Demo(settings, duration=duration, rate=rate, out=out,
                external_broker=external_broker)
    loop = asyncio.new_event_loop()
    main = loop.create_task(demo.run())
    loop.add_signal_handler(signal.SIGINT, demo.stopping.set)
    loop.add_signal_handler(signal.SIGTERM, demo.stopping.set)
    try:
        return loop.run_until_complete(main)
    finally:
        loop.close()


def pick_metrics_port(settings: Settings) -> Settings:
    """Use the configured metrics port if it is free, else any free port."""
    from streams.embedded_broker import port_in_use

    if settings.metrics_port and not port_in_use(settings.metrics_port):
        return settings
    return settings.model_copy(update={"metrics_port": free_port()})
