"""Soak: a worker under steady load for ten minutes -- memory flat, window table bounded.

    python benchmarks/soak.py --bootstrap 127.0.0.1:19092 --bundle PATH     # 10 min at max/2
    python benchmarks/soak.py --bundle PATH --duration 120 --rate 300       # shorter, fixed rate

First the worker's maximum throughput is measured while events are offered faster than it
can take them, the producer running as it does during the soak (unless ``--rate`` is given);
then events arrive at half of it for ``--duration`` seconds from a rolling population of
users (each active for a few seconds, then gone for good), while the worker's resident
memory (VmRSS) and its number of live windows are sampled. Windows expire after a short TTL
(``--ttl``, swept every ``--sweep`` seconds), so the table must level off at about
new-users-per-second x (TTL + sweep) instead of growing with every user ever seen.

Prints the figures as JSON (RSS after warm-up: min, max, spread, trend per hour; live
windows; windows expired) and writes a PNG of RSS and live windows over time.
tests/integration/test_soak.py runs the same loop for one minute in CI.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import orjson

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from streams.settings import Settings, load_settings  # noqa: E402
from tests.integration.workers import WorkerProcess, metric_value  # noqa: E402

ACTIONS = ("browse", "click", "click", "click", "search", "add_to_cart", "purchase")


# --- traffic ---------------------------------------------------------------------------------

class RollingShop:
    """Events from a rolling population: each user makes ``events_per_user`` events over a
    short visit, interleaved with ``concurrent`` other users, and never comes back."""

    def __init__(self, *, events_per_user: int = 8, concurrent: int = 40, seed: int = 1,
                 prefix: str = "soak") -> None:
        self.events_per_user = events_per_user
        self.concurrent = concurrent
        self.rng = random.Random(seed)
        self.prefix = prefix
        self.n = 0

    def next_event(self, now_ms: int) -> tuple[bytes, bytes]:
        """The next (key, value) to produce, stamped with ``now_ms``."""
        base = self.n // self.events_per_user
        user = f"{self.prefix}-u{base + self.rng.randrange(self.concurrent)}"
        kind = self.rng.choice(ACTIONS)
        event: dict[str, object] = {"event_id": f"{self.prefix}-e{self.n}", "user_id": user,
                                    "type": kind, "ts": now_ms,
                                    "category": f"c-{self.rng.randrange(8)}"}
        if kind == "search":
            event["query"] = self.rng.choice(["red mug", "desk lamp", "wool socks"])
        else:
            event["item_id"] = f"sku-{self.rng.randrange(48)}"
        self.n += 1
        return user.encode(), orjson.dumps(event)

    def users_per_second(self, rate: float) -> float:
        """New users per second at ``rate`` events per second."""
        return rate / self.events_per_user


class PacedProducer(threading.Thread):
    """Produces ``rate`` events/s from ``make`` in a thread until stopped (or ``limit``)."""

    def __init__(self, settings: Settings, make: Callable[[int], tuple[bytes, bytes]],
                 rate: float, *, limit: int | None = None) -> None:
        super().__init__(daemon=True, name="paced-producer")
        self.settings, self.make, self.rate, self.limit = settings, make, rate, limit
        self.sent = 0
        self.stopping = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        """Send in ticks of 50 ms, each with the events due by then."""
        try:
            asyncio.run(self._run())
        except BaseException as exc:
            self.error = exc

    async def _run(self) -> None:
        from aiokafka import AIOKafkaProducer

        from streams.kafka_config import client_kwargs

        producer = AIOKafkaProducer(**client_kwargs(self.settings), acks="all",
                                    enable_idempotence=True, linger_ms=5)
        await producer.start()
        try:
            began = time.monotonic()
            while not self.stopping.is_set():
                due = int((time.monotonic() - began) * self.rate) if self.rate else \
                    self.sent + 1000
                if self.limit is not None:
                    due = min(due, self.limit)
                now_ms = int(time.time() * 1000)
                while self.sent < due:
                    key, value = self.make(now_ms)
                    await producer.send(self.settings.events_topic, value, key=key)
                    self.sent += 1
                if self.limit is not None and self.sent >= self.limit:
                    break
                await asyncio.sleep(0.05)
            await producer.flush()
        finally:
            await producer.stop()

    def stop(self) -> None:
        """Stop producing and wait for the thread."""
        self.stopping.set()
        self.join(60)
        if self.error is not None:
            raise self.error


# --- measuring -------------------------------------------------------------------------------

def rss_bytes(pid: int) -> int:
    """Resident memory of a process (Linux /proc)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


@dataclass
class Sample:
    """One observation of the worker."""

    t: float  # seconds since the soak started
    rss: int  # bytes
    windows: float  # live windows (shopcast_window_users)
    predictions: float
    expired: float


@dataclass
class SoakResult:
    """The samples and the figures derived from them."""

    rate: float
    duration: float
    warmup: float
    ttl: int
    sweep: int
    max_rate: float | None
    samples: list[Sample] = field(default_factory=list)
    sent: int = 0
    base_predictions: float = 0.0  # the worker's count when the soak began

    def settled(self) -> list[Sample]:
        """Samples after the warm-up."""
        return [s for s in self.samples if s.t >= self.warmup]

    def figures(self) -> dict[str, float | int | None]:
        """RSS and table figures after the warm-up."""
        after = self.settled()
        rss = [s.rss for s in after]
        slope = _slope([s.t for s in after], [float(r) for r in rss]) if len(after) > 2 else 0.0
        expected_windows = self.rate / 8 * (self.ttl + self.sweep)
        return {
            "rate_events_per_s": round(self.rate, 1),
            "max_rate_events_per_s": round(self.max_rate, 1) if self.max_rate else None,
            "duration_s": self.duration,
            "warmup_s": self.warmup,
            "events_sent": self.sent,
            "predictions": int(self.samples[-1].predictions - self.base_predictions)
            if self.samples else 0,
            # Below 1 the worker fell behind (its backlog is also in RSS).
            "predicted_share": round((self.samples[-1].predictions - self.base_predictions)
                                     / self.sent, 3) if self.samples and self.sent else None,
            "rss_after_warmup_min_mib": round(min(rss) / 2**20, 1) if rss else None,
            "rss_after_warmup_max_mib": round(max(rss) / 2**20, 1) if rss else None,
            "rss_spread": round((max(rss) - min(rss)) / min(rss), 4) if rss else None,
            "rss_trend_mib_per_hour": round(slope * 3600 / 2**20, 1),
            "windows_after_warmup_max": int(max(s.windows for s in after)) if after else None,
            "windows_expected_about": int(expected_windows),
            "windows_expired": int(self.samples[-1].expired) if self.samples else 0,
        }

    def plot(self, path: Path) -> Path:
        """A PNG of RSS and live windows over time."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(9, 4.5))
        ts = [s.t for s in self.samples]
        ax.plot(ts, [s.rss / 2**20 for s in self.samples], color="tab:blue", label="RSS")
        ax.set_xlabel("seconds")
        ax.set_ylabel("worker RSS (MiB)", color="tab:blue")
        ax.axvspan(0, self.warmup, color="0.9", label="warm-up")
        other = ax.twinx()
        other.plot(ts, [s.windows for s in self.samples], color="tab:orange", label="windows")
        other.set_ylabel("live windows", color="tab:orange")
        ax.set_title(f"soak: {self.rate:.0f} events/s, TTL {self.ttl} s, sweep {self.sweep} s")
        fig.tight_layout()
        fig.savefig(path, dpi=100)
        plt.close(fig)
        return path


def _slope(xs: list[float], ys: list[float]) -> float:
    """Least-squares slope of ys over xs."""
    n = len(xs)
    mx, my = sum(xs) / n, sum(ys) / n
    var = sum((x - mx) ** 2 for x in xs)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / var if var else 0.0


def measure_max_rate(worker: WorkerProcess, settings: Settings, *, offered: float = 8000,
                     seconds: float = 25.0, settle: float = 5.0) -> float:
    """Events/s the worker predicts while events are offered faster than it can take them.

    The producer runs during the measurement, as it does during the soak: on a small
    machine it competes for the same cores. Afterwards the backlog is drained.
    """
    shop = RollingShop(prefix=f"cal-{uuid.uuid4().hex[:6]}")
    producer = PacedProducer(settings, shop.next_event, offered)
    base = metric_value(worker.metrics(), "shopcast_predictions_total")
    producer.start()
    time.sleep(settle)
    first = (time.monotonic(), metric_value(worker.metrics(), "shopcast_predictions_total"))
    time.sleep(seconds)
    last = (time.monotonic(), metric_value(worker.metrics(), "shopcast_predictions_total"))
    producer.stop()
    if last[1] <= first[1]:
        raise RuntimeError("the worker predicted nothing while events were offered")
    deadline = time.monotonic() + 900
    while metric_value(worker.metrics(), "shopcast_predictions_total") - base < producer.sent:
        if time.monotonic() > deadline:
            raise RuntimeError("the worker did not drain the calibration backlog")
        time.sleep(1)
    return (last[1] - first[1]) / (last[0] - first[0])


def soak(settings: Settings, worker: WorkerProcess, *, rate: float, duration: float,
         warmup: float, interval: float = 2.0, max_rate: float | None = None,
         log: Callable[[str], None] = print) -> SoakResult:
    """Produce at ``rate`` for ``duration`` seconds, sampling the worker every ``interval``."""
    assert worker.process is not None
    result = SoakResult(rate, duration, warmup, settings.window_ttl_seconds,
                        settings.window_sweep_seconds, max_rate)
    shop = RollingShop(prefix=f"soak-{uuid.uuid4().hex[:6]}")
    result.base_predictions = metric_value(worker.metrics(), "shopcast_predictions_total")
    producer = PacedProducer(settings, shop.next_event, rate)
    producer.start()
    began = time.monotonic()
    try:
        while (t := time.monotonic() - began) < duration:
            worker.assert_alive()
            page = worker.metrics()
            result.samples.append(Sample(
                t, rss_bytes(worker.process.pid), metric_value(page, "shopcast_window_users"),
                metric_value(page, "shopcast_predictions_total"),
                metric_value(page, "shopcast_windows_expired_total")))
            if len(result.samples) % max(1, int(30 / interval)) == 0:
                s = result.samples[-1]
                log(f"  {t:5.0f} s  rss {s.rss / 2**20:6.1f} MiB  windows {s.windows:7.0f}  "
                    f"predictions {s.predictions:9.0f}")
            time.sleep(interval)
    finally:
        producer.stop()
    result.sent = producer.sent
    return result


# --- command line ----------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bootstrap", default="127.0.0.1:19092")
    parser.add_argument("--bundle", type=Path, help="model bundle (default: SHOPCAST_BUNDLE_PATH)")
    parser.add_argument("--duration", type=float, default=600.0)
    parser.add_argument("--warmup", type=float, default=120.0)
    parser.add_argument("--rate", type=float, help="events/s (default: half the measured max)")
    parser.add_argument("--calibration-seconds", type=float, default=25.0)
    parser.add_argument("--ttl", type=int, default=30)
    parser.add_argument("--sweep", type=int, default=10)
    parser.add_argument("--partitions", type=int, default=6)
    parser.add_argument("--plot", type=Path, default=Path("soak.png"))
    args = parser.parse_args(argv)

    from streams.topics import ensure_topics

    run_id = f"soak-{uuid.uuid4().hex[:8]}"
    data_dir = Path(tempfile.mkdtemp(prefix="shopcast-soak-"))
    overrides: dict[str, object] = dict(
        bootstrap_servers=args.bootstrap, app_id=run_id, events_topic=f"{run_id}.events",
        predictions_topic=f"{run_id}.predictions", dlq_topic=f"{run_id}.dlq",
        erasure_topic=f"{run_id}.erasure", audit_topic=f"{run_id}.audit",
        partitions=args.partitions, window_ttl_seconds=args.ttl,
        window_sweep_seconds=args.sweep, data_dir=data_dir)
    if args.bundle:
        overrides["bundle_path"] = args.bundle
    settings = load_settings(**overrides)
    asyncio.run(ensure_topics(settings))
    worker = WorkerProcess(settings, data_dir / "worker.log", name="soak-worker")
    worker.start()
    try:
        worker.wait_for_metrics(timeout=120)
        max_rate = None
        rate = args.rate
        if rate is None:
            print(f"measuring the maximum throughput for {args.calibration_seconds:.0f} s...")
            max_rate = measure_max_rate(worker, settings, seconds=args.calibration_seconds)
            rate = max_rate / 2
            print(f"max {max_rate:.0f} events/s; soaking at {rate:.0f} events/s")
        result = soak(settings, worker, rate=rate, duration=args.duration,
                      warmup=args.warmup, max_rate=max_rate)
    finally:
        worker.stop()
        _delete_topics(settings, run_id)
    figures = result.figures()
    figures["plot"] = str(result.plot(args.plot))
    figures["worker_log"] = str(data_dir / "worker.log")
    print(json.dumps(figures, indent=2))
    (args.plot.with_suffix(".json")).write_text(json.dumps(
        {"figures": figures, "samples": [asdict(s) for s in result.samples]}, indent=1))
    return 0


def _delete_topics(settings: Settings, prefix: str) -> None:
    from streams.topics import delete_topics

    try:
        asyncio.run(delete_topics(settings, prefixes=[prefix], timeout=30))
    except Exception as exc:  # cleanup must not hide the figures
        print(f"could not delete the topics of {prefix}: {exc}")


if __name__ == "__main__":
    sys.exit(main())
