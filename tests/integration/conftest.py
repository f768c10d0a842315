"""Integration-test fixtures: one real broker per session, fresh topics for every test.

The broker is chosen once per session, the first that works in this order:

1. ``SHOPCAST_TEST_BOOTSTRAP=host:port``: an existing broker (``make test`` sets it to the local
   Apache Kafka it started; that broker is recognised and can still be restarted).
2. testcontainers' Kafka module, when a Docker engine answers (probed with a 2 s timeout;
   silently skipped when none answers). Image: ``SHOPCAST_TEST_KAFKA_IMAGE``.
3. A local Apache Kafka 4.x started with ``deploy/kafka-local/kafka.sh`` (Java + Maven; the
   first run fetches the jars). Stopped at the end only if this session started it.
4. The embedded tansu broker (memory storage) on a free port.

``SHOPCAST_TEST_BROKER=external|docker|apache-kafka|tansu`` forces one choice (and fails rather
than falling back). The choice is printed when made and again in the terminal summary, e.g.
``integration broker: apache-kafka 4.1.1 at 127.0.0.1:19092 (deploy/kafka-local/kafka.sh)``.

Fixtures (see each docstring): ``kafka_broker``, ``kafka_bootstrap``, ``unique_id``,
``topic_name``, ``settings_for``, ``make_topics``, ``broker_control``, ``produce``, ``consume``.
Plain helpers for produce/consume/polling live in ``tests/integration/kafka_helpers.py``.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from streams.embedded_broker import EmbeddedBroker, free_port
from streams.kafka_config import client_kwargs
from streams.settings import Settings, load_settings
from streams.topics import TopicResult, delete_topics, ensure_topics, topic_specs
from tests.integration import kafka_helpers

REPO = Path(__file__).resolve().parents[2]
KAFKA_SH = REPO / "deploy" / "kafka-local" / "kafka.sh"
DEFAULT_KAFKA_IMAGE = "confluentinc/cp-kafka:7.9.0"  # testcontainers' Kafka module drives cp-kafka

# Topic config that makes the changelog compact within seconds on Apache Kafka: roll segments
# every second (the active segment is never cleaned) and clean as soon as 1% is dirty.
FAST_COMPACTION = {
    "segment.ms": "1000",
    "min.cleanable.dirty.ratio": "0.01",
    "min.compaction.lag.ms": "0",
    "delete.retention.ms": "1000",
}


@dataclass
class Broker:
    """The session's broker.

    ``kind`` is one of ``apache-kafka`` (kafka.sh), ``testcontainers``, ``tansu`` or ``kafka``
    (an external broker of unknown make); ``description`` is the line printed in the summary.
    ``restart``/``stop``/``start`` are None when this broker cannot be controlled from the
    tests (an external broker, a container, or tansu whose memory storage a restart would wipe).
    """

    kind: str
    bootstrap: str
    description: str
    restart: Callable[[], float] | None = None
    stop: Callable[[], None] | None = None
    start: Callable[[], float] | None = None
    close: Callable[[], None] | None = field(default=None, repr=False)

    @property
    def is_apache_kafka(self) -> bool:
        """True on a real Apache Kafka (kafka.sh or a container), False on tansu or unknown."""
        return self.kind in ("apache-kafka", "testcontainers")

    @property
    def is_tansu(self) -> bool:
        """True on tansu: no DescribeConfigs, no compaction, topics auto-created on metadata."""
        return self.kind == "tansu"


# --- choosing the broker ---------------------------------------------------------------------

def _kafka_sh(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", str(KAFKA_SH), *args], capture_output=True, text=True,
                          timeout=timeout, check=False)


def _kafka_sh_controls(started_here: bool) -> dict[str, Any]:
    """restart/stop/start callables for the kafka.sh broker (each returns after it answers)."""

    def run(action: str) -> float:
        began = time.monotonic()
        result = _kafka_sh(action)
        if result.returncode != 0:
            raise RuntimeError(f"kafka.sh {action} failed:\n{result.stderr[-3000:]}")
        return time.monotonic() - began

    def stop() -> None:
        run("stop")

    controls: dict[str, Any] = {"restart": lambda: run("restart"), "stop": stop,
                                "start": lambda: run("start")}
    if started_here and not os.environ.get("SHOPCAST_TEST_KEEP_BROKER"):
        controls["close"] = lambda: _kafka_sh("stop", timeout=120)
    return controls


def _kafka_sh_version() -> str:
    return _kafka_sh("version", timeout=10).stdout.strip() or "4.x"


def _external(bootstrap: str) -> Broker:
    """An existing broker; recognised as kafka.sh's own broker when it is (then restartable)."""
    if KAFKA_SH.exists():
        mine = _kafka_sh("bootstrap", timeout=10).stdout.strip()
        if mine == bootstrap and _kafka_sh("status", timeout=30).returncode == 0:
            return Broker("apache-kafka", bootstrap,
                          f"apache-kafka {_kafka_sh_version()} at {bootstrap} "
                          "(deploy/kafka-local/kafka.sh, via SHOPCAST_TEST_BOOTSTRAP)",
                          **_kafka_sh_controls(started_here=False))
    cluster_id = _cluster_id(bootstrap)
    if cluster_id == "tansu_cluster":
        return Broker("tansu", bootstrap, f"tansu at {bootstrap} (SHOPCAST_TEST_BOOTSTRAP)")
    return Broker("kafka", bootstrap,
                  f"external broker at {bootstrap} (cluster id {cluster_id}, "
                  "SHOPCAST_TEST_BOOTSTRAP)")


def _cluster_id(bootstrap: str) -> str | None:
    from aiokafka.admin import AIOKafkaAdminClient

    async def describe() -> str | None:
        admin = AIOKafkaAdminClient(**client_kwargs(load_settings(bootstrap_servers=bootstrap)),
                                    request_timeout_ms=10000)
        try:
            await asyncio.wait_for(admin.start(), 20)
            return (await asyncio.wait_for(admin.describe_cluster(), 20)).get("cluster_id")
        finally:
            await admin.close()

    try:
        return asyncio.run(describe())
    except Exception as exc:
        raise RuntimeError(f"SHOPCAST_TEST_BOOTSTRAP={bootstrap}: no Kafka answers: {exc}") \
            from exc


def _docker_answers() -> bool:
    try:
        import docker

        client = docker.from_env(timeout=2)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except Exception:
        return False


def _testcontainers() -> Broker:
    from testcontainers.community.kafka import KafkaContainer

    image = os.environ.get("SHOPCAST_TEST_KAFKA_IMAGE", DEFAULT_KAFKA_IMAGE)
    container = KafkaContainer(image).with_kraft()
    container.with_env("KAFKA_AUTO_CREATE_TOPICS_ENABLE", "false")
    container.with_env("KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR", "1")
    container.with_env("KAFKA_TRANSACTION_STATE_LOG_MIN_ISR", "1")
    container.with_env("KAFKA_LOG_CLEANER_BACKOFF_MS", "500")
    container.start(timeout=180)
    bootstrap = container.get_bootstrap_server()
    return Broker("testcontainers", bootstrap, f"testcontainers {image} (KRaft) at {bootstrap}",
                  close=container.stop)


def _local_apache_kafka() -> Broker:
    missing = [tool for tool in ("java", "mvn") if shutil.which(tool) is None]
    if missing:
        raise RuntimeError(f"{' and '.join(missing)} not installed")
    was_running = _kafka_sh("status", timeout=30).returncode == 0
    result = _kafka_sh("start", timeout=600)
    if result.returncode != 0:
        raise RuntimeError(f"kafka.sh start failed:\n{result.stderr[-3000:]}")
    bootstrap = _kafka_sh("bootstrap", timeout=10).stdout.strip()
    how = "already running" if was_running else "started for this session"
    return Broker("apache-kafka", bootstrap,
                  f"apache-kafka {_kafka_sh_version()} at {bootstrap} "
                  f"(deploy/kafka-local/kafka.sh, {how})",
                  **_kafka_sh_controls(started_here=not was_running))


def _tansu(log_dir: Path) -> Broker:
    port = free_port()
    broker = EmbeddedBroker(port, log_path=log_dir / f"tansu-{port}.log")
    broker.start()
    broker.wait_ready()
    return Broker("tansu", broker.bootstrap,
                  f"tansu (embedded, memory storage) at {broker.bootstrap}", close=broker.stop)


def choose_broker(log_dir: Path) -> tuple[Broker, list[str]]:
    """Pick the session's broker (see the module docstring); also return why others were not."""
    forced = os.environ.get("SHOPCAST_TEST_BROKER", "").strip()
    bootstrap = os.environ.get("SHOPCAST_TEST_BOOTSTRAP", "").strip()
    skipped: list[str] = []
    if forced not in ("", "external", "docker", "apache-kafka", "tansu"):
        raise pytest.UsageError(
            f"SHOPCAST_TEST_BROKER={forced!r}: use external, docker, apache-kafka or tansu")
    if bootstrap and forced in ("", "external"):
        return _external(bootstrap), skipped
    if forced == "external":
        raise pytest.UsageError("SHOPCAST_TEST_BROKER=external needs SHOPCAST_TEST_BOOTSTRAP")
    options: list[tuple[str, Callable[[], Broker]]] = [
        ("docker", _testcontainers), ("apache-kafka", _local_apache_kafka),
        ("tansu", lambda: _tansu(log_dir))]
    for name, make in options:
        if forced and name != forced:
            continue
        if name == "docker" and not _docker_answers():
            if forced:
                raise RuntimeError("SHOPCAST_TEST_BROKER=docker but no Docker engine answers")
            continue  # the usual case here: no engine, nothing to report
        try:
            return make(), skipped
        except Exception as exc:
            if forced:
                raise
            skipped.append(f"{name}: {str(exc).strip().splitlines()[-1] if str(exc) else exc!r}")
    raise RuntimeError("no broker could be started: " + "; ".join(skipped))


_CHOSEN: list[str] = []


def _announce(config: pytest.Config, line: str) -> None:
    """Write a line to the terminal now, even while pytest captures output."""
    _CHOSEN.append(line)
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    capture = config.pluginmanager.get_plugin("capturemanager")
    if reporter is None:
        return
    if capture is not None:
        with capture.global_and_fixture_disabled():
            reporter.write_line(f"\n{line}")
    else:
        reporter.write_line(line)


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """Repeat which broker the integration tests ran on, so CI logs show it."""
    for line in _CHOSEN:
        terminalreporter.write_line(line)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every test under tests/integration is marked ``integration``."""
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.path)).parents:
            item.add_marker(pytest.mark.integration)


# --- fixtures --------------------------------------------------------------------------------

@pytest.fixture(scope="session")
def kafka_broker(request: pytest.FixtureRequest,
                 tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    """The session's :class:`Broker` (chosen once; see the module docstring).

    Use ``kafka_broker.kind`` / ``.is_apache_kafka`` / ``.is_tansu`` to adapt or skip a test
    (e.g. compaction only happens on Apache Kafka).
    """
    began = time.monotonic()
    broker, skipped = choose_broker(tmp_path_factory.mktemp("broker"))
    note = f" [not used: {'; '.join(skipped)}]" if skipped else ""
    _announce(request.config, f"integration broker: {broker.description} "
                              f"(ready in {time.monotonic() - began:.1f} s){note}")
    yield broker
    if broker.close is not None:
        broker.close()


@pytest.fixture(scope="session")
def kafka_bootstrap(kafka_broker: Broker) -> str:
    """The session broker's bootstrap address, ``host:port``."""
    return kafka_broker.bootstrap


@pytest.fixture
def unique_id(request: pytest.FixtureRequest) -> str:
    """A short id unique to this test run, e.g. ``t-test-round-trip-3f2a9c1b``.

    Safe in topic names, consumer group ids and Faust app ids.
    """
    name = re.sub(r"[^A-Za-z0-9]+", "-", request.node.name).strip("-").lower()[:40]
    return f"t-{name}-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def topic_name(unique_id: str) -> Callable[[str], str]:
    """A factory: ``topic_name("events")`` -> ``"<unique_id>.events"``, unique to this test."""
    return lambda suffix="topic": f"{unique_id}.{suffix}"


@pytest.fixture
def settings_for(kafka_bootstrap: str, unique_id: str,
                 tmp_path: Path) -> Callable[..., Settings]:
    """A factory of :class:`Settings` pointing at the session broker with this test's topics.

    ``settings_for(**overrides)`` sets ``bootstrap_servers``, ``app_id=<unique_id>``, every topic
    to ``<unique_id>.events|predictions|dlq|erasure|audit`` and ``data_dir`` to a temp dir; any
    Settings field can be overridden (``settings_for(partitions=3, store="rocksdb")``). Calls in
    the same test share the app id and topics (several workers of one app); pass ``app_id=`` /
    topic names to make a second, separate app. Security settings (SASL/SSL) still come from
    ``SHOPCAST_*`` variables, for an external broker that needs them.
    """

    def make(**overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "bootstrap_servers": kafka_bootstrap,
            "app_id": unique_id,
            "events_topic": f"{unique_id}.events",
            "predictions_topic": f"{unique_id}.predictions",
            "dlq_topic": f"{unique_id}.dlq",
            "erasure_topic": f"{unique_id}.erasure",
            "audit_topic": f"{unique_id}.audit",
            "data_dir": tmp_path / "shopcast-data",
        }
        values.update(overrides)
        return load_settings(**values)

    return make


@pytest.fixture
def make_topics(kafka_bootstrap: str, unique_id: str
                ) -> Iterator[Callable[..., list[TopicResult]]]:
    """A factory: ``make_topics(settings, changelog_config=None)`` creates shopcast's topics.

    Creates events, predictions, dlq, erasure, audit and ``{app_id}-windows-changelog`` with
    ``settings.partitions`` partitions (via ``streams.topics.ensure_topics``; fails on any
    mismatch) and returns the :class:`~streams.topics.TopicResult` list. Pass
    ``changelog_config=FAST_COMPACTION`` to see compaction within seconds on Apache Kafka.
    At the end of the test these topics are deleted, with every topic whose name starts with
    this test's ``unique_id`` or with ``{app_id}-`` (Faust's own internal topics), unless
    ``SHOPCAST_TEST_KEEP_TOPICS`` is set.
    """
    used: list[Settings] = []

    def make(settings: Settings, changelog_config: Mapping[str, str] | None = None,
             timeout: float = 60.0) -> list[TopicResult]:
        used.append(settings)
        return asyncio.run(ensure_topics(settings, changelog_config=changelog_config,
                                         timeout=timeout))

    yield make
    if os.environ.get("SHOPCAST_TEST_KEEP_TOPICS"):
        return
    if not used:
        return
    names = {spec.name for settings in used for spec in topic_specs(settings)}
    prefixes = {unique_id} | {f"{settings.app_id}-" for settings in used}
    try:
        asyncio.run(delete_topics(used[0], names, prefixes, timeout=30))
    except Exception as exc:  # cleanup must not fail the test
        print(f"could not delete the topics of {unique_id}: {exc}")


@dataclass
class BrokerControl:
    """Stop, start or restart the session broker from a test (kafka.sh's Apache Kafka only)."""

    broker: Broker

    def restart(self) -> float:
        """Restart the broker keeping its data; return the seconds until it answered again."""
        assert self.broker.restart is not None
        return self.broker.restart()

    def stop(self) -> None:
        """Stop the broker (controlled shutdown); :meth:`start` brings it back with its data."""
        assert self.broker.stop is not None
        self.broker.stop()

    def start(self) -> float:
        """Start the broker again; return the seconds until it answered."""
        assert self.broker.start is not None
        return self.broker.start()


@pytest.fixture
def broker_control(kafka_broker: Broker) -> Iterator[BrokerControl]:
    """Restart/stop/start the broker mid-test (reliability tests); skips where impossible.

    Only the local Apache Kafka of kafka.sh can be controlled (also when it came through
    ``SHOPCAST_TEST_BOOTSTRAP``, as under ``make test``). If the test leaves it stopped, it is
    started again afterwards so later tests still have a broker.
    """
    if kafka_broker.restart is None:
        pytest.skip(f"the broker cannot be restarted from a test: {kafka_broker.description}")
    yield BrokerControl(kafka_broker)
    assert kafka_broker.start is not None
    kafka_broker.start()  # kafka.sh start is a no-op when it runs


@pytest.fixture
def produce() -> Callable[..., int]:
    """``produce(settings, topic, [(key, value), ...], timeout=30)``: see kafka_helpers.produce."""
    return kafka_helpers.produce


@pytest.fixture
def consume() -> Callable[..., list[Any]]:
    """``consume(settings, topic, count=N, timeout=30)``: see kafka_helpers.consume."""
    return kafka_helpers.consume
