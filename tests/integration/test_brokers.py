"""Brokers and topics: shopcast's topics on the session broker, the embedded tansu broker,
``shopcast broker`` and ``shopcast topics``, and the fixtures the other integration tests use."""

import asyncio
import os
import signal
import socket
import subprocess
import sys
import threading

import pytest

from streams.embedded_broker import BrokerError, EmbeddedBroker, free_port, kafka_answers
from streams.kafka_config import client_kwargs
from streams.settings import load_settings
from streams.topics import (
    PARTITIONS_ADVICE,
    TopicsError,
    changelog_topic,
    create_topics,
    ensure_topics,
    list_topics,
    topic_specs,
)
from tests.integration.conftest import REPO
from tests.integration.kafka_helpers import consume, create_topic, json_values, produce

SHOPCAST = [sys.executable, "-m", "streams.cli"]


def topic_configs(settings, names):
    """{topic: {config: value}} read with DescribeConfigs."""
    from aiokafka.admin import AIOKafkaAdminClient
    from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

    async def describe():
        admin = AIOKafkaAdminClient(**client_kwargs(settings))
        await admin.start()
        try:
            while True:  # a topic created a moment ago may be unknown to the broker for a bit
                responses = await admin.describe_configs(
                    [ConfigResource(ConfigResourceType.TOPIC, name) for name in names])
                resources = [r for response in responses
                             for r in response.to_object()["resources"]]
                if all(r["error_code"] == 0 for r in resources):
                    break
                await asyncio.sleep(0.2)
        finally:
            await admin.close()
        return {r["resource_name"]: {e["config_names"]: e["config_value"]
                                     for e in r["config_entries"]} for r in resources}

    return asyncio.run(asyncio.wait_for(describe(), 30))


def run_shopcast(settings, *args, timeout=60):
    env = {k: v for k, v in os.environ.items() if not k.startswith("SHOPCAST_")}
    env.update({
        "SHOPCAST_BOOTSTRAP_SERVERS": settings.bootstrap_servers,
        "SHOPCAST_APP_ID": settings.app_id,
        "SHOPCAST_EVENTS_TOPIC": settings.events_topic,
        "SHOPCAST_PREDICTIONS_TOPIC": settings.predictions_topic,
        "SHOPCAST_DLQ_TOPIC": settings.dlq_topic,
        "SHOPCAST_ERASURE_TOPIC": settings.erasure_topic,
        "SHOPCAST_AUDIT_TOPIC": settings.audit_topic,
        "SHOPCAST_PARTITIONS": str(settings.partitions),
    })
    return subprocess.run([*SHOPCAST, *args], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=timeout, check=False)


# --- topics on the session broker ------------------------------------------------------------

def test_topics_get_the_configured_partitions_and_a_compacted_changelog(
        settings_for, make_topics, kafka_broker):
    settings = settings_for(partitions=3)
    results = make_topics(settings)

    names = [r.spec.name for r in results]
    assert names == [spec.name for spec in topic_specs(settings)]
    assert set(names) >= {settings.events_topic, settings.predictions_topic, settings.dlq_topic,
                          settings.erasure_topic, settings.audit_topic, changelog_topic(settings)}
    assert changelog_topic(settings) == f"{settings.app_id}-windows-changelog"
    assert {r.status for r in results} == {"created"}
    partitions = asyncio.run(list_topics(settings))
    assert {name: partitions[name] for name in names} == {name: 3 for name in names}
    if kafka_broker.is_tansu:
        return  # tansu does not answer DescribeConfigs
    configs = topic_configs(settings, names)
    assert configs[changelog_topic(settings)]["cleanup.policy"] == "compact"
    assert configs[settings.events_topic]["cleanup.policy"] == "delete"


def test_creating_topics_again_changes_nothing(settings_for, make_topics):
    settings = settings_for(partitions=2)
    make_topics(settings)
    again = make_topics(settings)
    assert [r.status for r in again] == ["exists"] * len(topic_specs(settings))
    assert all(r.ok for r in again)


def test_a_partition_count_mismatch_is_reported_clearly(settings_for, make_topics):
    make_topics(settings_for(partitions=3))
    results = asyncio.run(create_topics(settings_for(partitions=4)))

    assert {r.status for r in results} == {"mismatch"}
    assert "exists with 3 partitions, but SHOPCAST_PARTITIONS=4" in results[0].detail
    with pytest.raises(TopicsError) as error:
        asyncio.run(ensure_topics(settings_for(partitions=4)))
    assert "PartitionsMismatch" in str(error.value) and PARTITIONS_ADVICE in str(error.value)


def test_a_changelog_that_is_not_compacted_is_reported(settings_for, make_topics, kafka_broker):
    if kafka_broker.is_tansu:
        pytest.skip("tansu does not report topic configs")
    settings = settings_for(partitions=2)
    create_topic(settings, changelog_topic(settings), 2, {"cleanup.policy": "delete"})
    with pytest.raises(TopicsError, match="cleanup.policy=delete, needs cleanup.policy=compact"):
        make_topics(settings)


def test_the_changelog_config_can_be_extended(settings_for, make_topics, kafka_broker):
    if kafka_broker.is_tansu:
        pytest.skip("tansu does not report topic configs")
    from tests.integration.conftest import FAST_COMPACTION

    settings = settings_for(partitions=1)
    make_topics(settings, changelog_config=FAST_COMPACTION)
    config = topic_configs(settings, [changelog_topic(settings)])[changelog_topic(settings)]
    assert config["cleanup.policy"] == "compact"
    assert {k: config[k] for k in FAST_COMPACTION} == FAST_COMPACTION


def test_an_unreachable_broker_is_a_clear_error():
    settings = load_settings(bootstrap_servers=f"127.0.0.1:{free_port()}")
    with pytest.raises(TopicsError, match="cannot reach Kafka at 127.0.0.1"):
        asyncio.run(create_topics(settings, timeout=5))


# --- produce and consume ---------------------------------------------------------------------

def test_produce_consume_round_trip(settings_for, make_topics):
    settings = settings_for(partitions=3)
    make_topics(settings)
    sent = [(f"u-{i}", {"event_id": f"e-{i}", "user_id": f"u-{i}"}) for i in range(20)]
    sent += [("u-text", "plain text"), (None, b"\xff\xfe raw bytes"), ("u-gone", None)]

    assert produce(settings, settings.events_topic, sent) == len(sent)
    records = consume(settings, settings.events_topic, count=len(sent), timeout=30)

    got = {(r.key, r.value) for r in records}
    assert (b"u-3", b'{"event_id":"e-3","user_id":"u-3"}') in got
    assert (b"u-text", b"plain text") in got
    assert (None, b"\xff\xfe raw bytes") in got
    assert (b"u-gone", None) in got
    assert len(records) == len(sent)
    assert len({r.partition for r in records}) > 1  # keys spread over the partitions
    numbered = [r for r in records if r.key and r.key[2:].isdigit()]
    assert sorted(v["event_id"] for v in json_values(numbered)) == sorted(
        f"e-{i}" for i in range(20))
    # Without count: a snapshot of everything up to the end offsets.
    assert len(consume(settings, settings.events_topic, timeout=30)) == len(sent)


def test_consume_returns_when_the_records_do_not_come(settings_for, make_topics):
    settings = settings_for(partitions=1)
    make_topics(settings)
    assert consume(settings, settings.dlq_topic, count=1, timeout=2, strict=False) == []
    with pytest.raises(AssertionError, match="got 0 of 1 records"):
        consume(settings, settings.dlq_topic, count=1, timeout=1)


def test_topics_cli_create_list_and_mismatch(settings_for, make_topics):
    settings = settings_for(partitions=2)

    created = run_shopcast(settings, "topics", "create")
    assert created.returncode == 0, created.stderr
    assert created.stdout.count("created") == len(topic_specs(settings))
    again = run_shopcast(settings, "topics", "create")
    assert again.returncode == 1 and "--if-missing" in again.stderr
    assert run_shopcast(settings, "topics", "create", "--if-missing").returncode == 0
    listed = run_shopcast(settings, "topics", "list")
    assert f"{settings.events_topic}\t2" in listed.stdout.splitlines()
    mismatch = run_shopcast(settings.model_copy(update={"partitions": 5}),
                            "topics", "create", "--if-missing")
    assert mismatch.returncode == 1
    assert "exists with 2 partitions, but SHOPCAST_PARTITIONS=5" in mismatch.stderr
    assert "PartitionsMismatch" in mismatch.stderr
    # The library sees what the command made (and make_topics cleans the topics up).
    assert all(r.status == "exists" for r in make_topics(settings))


def test_the_broker_can_be_restarted_keeping_its_data(settings_for, make_topics, broker_control):
    settings = settings_for(partitions=2)
    make_topics(settings)
    produce(settings, settings.events_topic, [("u-1", {"n": 1}), ("u-2", {"n": 2})])

    broker_control.restart()

    assert len(consume(settings, settings.events_topic, count=2, timeout=60)) == 2
    produce(settings, settings.events_topic, [("u-3", {"n": 3})], timeout=60)
    assert len(consume(settings, settings.events_topic, count=3, timeout=60)) == 3


# --- the embedded tansu broker ---------------------------------------------------------------

def test_tansu_starts_answers_and_stops(tmp_path):
    port = free_port()
    broker = EmbeddedBroker(port, log_path=tmp_path / "tansu.log")
    with broker:
        assert broker.running and broker.bootstrap == f"127.0.0.1:{port}"
        assert kafka_answers("127.0.0.1", port)
        settings = load_settings(bootstrap_servers=broker.bootstrap, app_id="embedded",
                                 partitions=3)
        results = asyncio.run(ensure_topics(settings))
        assert {r.status for r in results} == {"created"}
        assert asyncio.run(list_topics(settings))[settings.events_topic] == 3
        produce(settings, settings.events_topic, [("u-1", {"n": 1}), ("u-2", {"n": 2})])
        assert len(consume(settings, settings.events_topic, count=2, timeout=20)) == 2
    assert not broker.running and broker.pid is None
    assert not kafka_answers("127.0.0.1", port)
    assert (tmp_path / "tansu.log").exists()


def test_tansu_refuses_a_port_in_use():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(BrokerError, match=f"port {port} .* already in use"):
            EmbeddedBroker(port).start()


def test_a_broker_binary_that_cannot_run_is_a_clear_error(tmp_path):
    missing = EmbeddedBroker(free_port(), binary=str(tmp_path / "no-such-tansu"),
                             log_path=tmp_path / "a.log")
    with pytest.raises(BrokerError, match="cannot start tansu"):
        missing.start()

    failing = tmp_path / "failing-tansu"
    failing.write_text("#!/bin/sh\necho 'tansu: cannot bind' >&2\nexit 3\n")
    failing.chmod(0o755)
    broker = EmbeddedBroker(free_port(), binary=str(failing), log_path=tmp_path / "b.log")
    broker.start()
    with pytest.raises(BrokerError, match=r"(?s)exited \(code 3\).*cannot bind"):
        broker.wait_ready(timeout=10)


def test_shopcast_broker_runs_in_the_foreground_until_interrupted(tmp_path):
    port = free_port()
    process = subprocess.Popen(
        [*SHOPCAST, "broker", "--port", str(port), "--log-file", str(tmp_path / "tansu.log")],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines = []
    ready = threading.Event()

    def read():
        for line in process.stdout:
            lines.append(line)
            if "listening on" in line:
                ready.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        assert ready.wait(30), "".join(lines)
        assert f"127.0.0.1:{port}" in lines[0]
        assert kafka_answers("127.0.0.1", port)
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=20) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    reader.join(5)
    assert not kafka_answers("127.0.0.1", port)


def test_shopcast_broker_reports_a_port_in_use():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run([*SHOPCAST, "broker", "--port", str(port)], cwd=REPO,
                                capture_output=True, text=True, timeout=30, check=False)
    assert result.returncode == 1
    assert f"port {port} on 127.0.0.1 is already in use" in result.stderr


# --- Docker ----------------------------------------------------------------------------------

@pytest.mark.docker
def test_testcontainers_kafka_round_trip():
    from tests.integration.conftest import _docker_answers, _testcontainers

    if not _docker_answers():
        pytest.skip("no Docker engine answers (testcontainers needs one)")
    broker = _testcontainers()
    try:
        settings = load_settings(bootstrap_servers=broker.bootstrap, app_id="tc", partitions=2)
        asyncio.run(ensure_topics(settings))
        produce(settings, settings.events_topic, [("u-1", {"n": 1})])
        assert len(consume(settings, settings.events_topic, count=1, timeout=60)) == 1
    finally:
        broker.close()
