"""Time what a worker waits for on a broker: the first consumer-group join, and Faust's start.

    python benchmarks/broker_timings.py --bootstrap 127.0.0.1:19092      # any running broker
    python benchmarks/broker_timings.py --tansu                          # starts an embedded tansu

Prints one JSON line. On tansu a new group's first join waits half the session timeout
(aiokafka's default 10 s -> 5 s; Faust's broker_session_timeout 60 s -> 30 s): try
``--tansu --faust --faust-session-timeout 6``. Run it on a freshly started broker to see the
first-ever join (which also creates __consumer_offsets), then again for a warm broker.
Numbers for docs/operations-brokers.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
import uuid

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic


async def create_topic(bootstrap: str, name: str, partitions: int) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(name, partitions, 1)])
    finally:
        await admin.close()


async def group_join(bootstrap: str, topic: str, **consumer_options: object) -> float:
    """Seconds from consumer.start() to a non-empty assignment, for a brand-new group."""
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap,
                                group_id=f"timing-{uuid.uuid4().hex[:8]}", **consumer_options)
    started = time.monotonic()
    await consumer.start()
    try:
        while not consumer.assignment():
            await consumer.getmany(timeout_ms=100)
        return time.monotonic() - started
    finally:
        await consumer.stop()


async def round_trip(bootstrap: str, topic: str) -> float:
    """Seconds for one record: produce (acks=all) and read it back with a group-less consumer."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, auto_offset_reset="earliest")
    await producer.start()
    await consumer.start()
    try:
        from aiokafka import TopicPartition
        consumer.assign([TopicPartition(topic, 0)])
        started = time.monotonic()
        await producer.send_and_wait(topic, b"ping", partition=0)
        while True:
            batch = await consumer.getmany(timeout_ms=100)
            if any(batch.values()):
                return time.monotonic() - started
    finally:
        await producer.stop()
        await consumer.stop()


async def throughput(bootstrap: str, topic: str, partitions: int,
                     n: int = 200_000) -> tuple[float, float]:
    """Records/s for one aiokafka producer (acks=1, linger 5 ms) and then one consumer."""
    value = b'{"event_id":"e-1","user_id":"u-1","type":"click","ts":1,"item_id":"i-1"}' * 2
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5, acks=1)
    await producer.start()
    try:
        started = time.monotonic()
        for i in range(n):
            await producer.send(topic, value, key=str(i % 1000).encode())
        await producer.flush()
        produced = n / (time.monotonic() - started)
    finally:
        await producer.stop()
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, auto_offset_reset="earliest")
    await consumer.start()
    try:
        from aiokafka import TopicPartition
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        started, seen = time.monotonic(), 0
        while seen < n:
            batch = await consumer.getmany(timeout_ms=500, max_records=10_000)
            seen += sum(len(records) for records in batch.values())
        return produced, n / (time.monotonic() - started)
    finally:
        await consumer.stop()


def faust_ready(bootstrap: str, partitions: int, session_timeout: float | None = None) -> float:
    """Seconds from starting a one-agent Faust worker (default settings) to its first record."""
    import multiprocessing

    topic = f"timing-faust-{uuid.uuid4().hex[:8]}"
    asyncio.run(create_topic(bootstrap, topic, partitions))
    ready = multiprocessing.get_context("spawn").Queue()
    worker = multiprocessing.get_context("spawn").Process(
        target=_faust_worker, args=(bootstrap, topic, ready, session_timeout), daemon=True)
    started = time.monotonic()
    worker.start()

    async def feed() -> float:
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
        await producer.start()
        try:
            while True:
                await producer.send_and_wait(topic, b'{"n": 1}', key=b"k")
                try:
                    ready.get(timeout=0.5)
                    return time.monotonic() - started
                except Exception:  # queue.Empty
                    if time.monotonic() - started > 300:
                        return float("nan")
        finally:
            await producer.stop()

    try:
        return asyncio.run(feed())
    finally:
        worker.terminate()
        worker.join(10)


def _faust_worker(bootstrap: str, topic: str, ready: object,
                  session_timeout: float | None) -> None:
    import logging
    import tempfile

    import faust

    logging.basicConfig(level=logging.WARNING)
    options = {} if session_timeout is None else {"broker_session_timeout": session_timeout}
    app = faust.App(f"timing-{uuid.uuid4().hex[:8]}", broker=f"kafka://{bootstrap}",
                    datadir=tempfile.mkdtemp(), web_enabled=False, **options)
    source = app.topic(topic, value_serializer="raw")

    @app.agent(source)
    async def consume(stream):  # noqa: ANN001, ANN202
        async for _ in stream:
            ready.put(True)  # type: ignore[attr-defined]

    app.finalize()
    worker = faust.Worker(app, loglevel="WARNING", quiet=True)
    worker.execute_from_commandline()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bootstrap")
    parser.add_argument("--tansu", action="store_true", help="start an embedded tansu broker")
    parser.add_argument("--faust", action="store_true", help="also time a Faust worker's start")
    parser.add_argument("--partitions", type=int, default=6)
    parser.add_argument("--throughput", action="store_true",
                        help="also time 200k records through one producer and one consumer")
    parser.add_argument("--faust-session-timeout", type=float, default=None,
                        help="Faust's broker_session_timeout in seconds (default: Faust's, 60)")
    args = parser.parse_args()
    broker = None
    result: dict[str, object] = {}
    if args.tansu:
        from streams.embedded_broker import EmbeddedBroker, free_port

        broker = EmbeddedBroker(free_port())
        started = time.monotonic()
        broker.start()
        broker.wait_ready()
        result["tansu_start_s"] = round(time.monotonic() - started, 3)
        bootstrap = broker.bootstrap
    else:
        bootstrap = args.bootstrap
    try:
        topic = f"timing-{uuid.uuid4().hex[:8]}"
        asyncio.run(create_topic(bootstrap, topic, args.partitions))
        result["round_trip_s"] = round(asyncio.run(round_trip(bootstrap, topic)), 3)
        result["group_join_first_s"] = round(asyncio.run(group_join(bootstrap, topic)), 3)
        result["group_join_next_s"] = round(asyncio.run(group_join(bootstrap, topic)), 3)
        if args.throughput:
            topic = f"timing-{uuid.uuid4().hex[:8]}"
            asyncio.run(create_topic(bootstrap, topic, args.partitions))
            produced, consumed = asyncio.run(throughput(bootstrap, topic, args.partitions))
            result["produce_per_s"], result["consume_per_s"] = round(produced), round(consumed)
        if args.faust:
            result["faust_first_record_s"] = round(
                faust_ready(bootstrap, args.partitions, args.faust_session_timeout), 3)
        result["bootstrap"] = bootstrap
        print(json.dumps(result))
    finally:
        if broker is not None:
            broker.stop()


if __name__ == "__main__":
    main()
