"""Security settings against a real secured Apache Kafka: SASL/SCRAM, TLS, and where /metrics binds.

A second single-node Apache Kafka 4.x (the jars of deploy/kafka-local/kafka.sh) is started
for this module with two listeners, both requiring SCRAM-SHA-512 logins: SASL_PLAINTEXT, and
SASL_SSL with a self-signed certificate made by openssl. The test skips cleanly when Java,
openssl or the jars are missing, or when the broker does not come up within two minutes.
A worker configured only through SHOPCAST_* variables logs in over TLS and predicts; a wrong
password is refused; /metrics answers on the configured address only.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from aiokafka.admin import AIOKafkaAdminClient

from streams.embedded_broker import free_port
from streams.kafka_config import client_kwargs
from streams.settings import Settings, load_settings
from tests.integration.kafka_helpers import consume, produce
from tests.integration.reliability import keyed, toy_stream
from tests.integration.workers import WorkerProcess

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
KAFKA_SH = REPO / "deploy" / "kafka-local" / "kafka.sh"
USER, PASSWORD = "shop", "shop-secret"


@dataclass
class SecureBroker:
    """The secured broker's two client listeners and its CA certificate."""

    sasl_plaintext: str
    sasl_ssl: str
    ca_file: Path


def _jars() -> Path | None:
    if not KAFKA_SH.exists():
        return None
    result = subprocess.run(["bash", str(KAFKA_SH), "fetch"], capture_output=True, text=True,
                            timeout=600, check=False)
    libs = Path(result.stdout.strip().splitlines()[-1]) if result.stdout.strip() else None
    return libs if result.returncode == 0 and libs and libs.is_dir() else None


def _certificate(folder: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and a file with its key and itself (PEM)."""
    cert, key = folder / "broker.crt", folder / "broker.key"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                    "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    keystore = folder / "keystore.pem"
    keystore.write_text(key.read_text() + cert.read_text())
    return cert, keystore


def _answers(bootstrap: str, **security: str) -> bool:
    settings = load_settings(bootstrap_servers=bootstrap, **security)

    async def probe() -> bool:
        admin = AIOKafkaAdminClient(**client_kwargs(settings), request_timeout_ms=5000)
        try:
            await asyncio.wait_for(admin.start(), 10)
            await asyncio.wait_for(admin.list_topics(), 10)
            return True
        finally:
            await admin.close()

    try:
        return asyncio.run(probe())
    except Exception:
        return False


@pytest.fixture(scope="module")
def secure_broker(tmp_path_factory) -> Iterator[SecureBroker]:
    """A SCRAM-only Apache Kafka on free ports (SASL_PLAINTEXT and SASL_SSL), for this module."""
    if shutil.which("java") is None or shutil.which("openssl") is None:
        pytest.skip("java and openssl are needed for the secured broker")
    libs = _jars()
    if libs is None:
        pytest.skip("the Apache Kafka jars (deploy/kafka-local/kafka.sh fetch) are not available")
    folder = tmp_path_factory.mktemp("secure-kafka")
    cert, keystore = _certificate(folder)
    plain, tls, controller = free_port(), free_port(), free_port()
    jaas = ('org.apache.kafka.common.security.scram.ScramLoginModule required '
            'username="admin" password="admin-secret";')
    config = folder / "server.properties"
    config.write_text(f"""
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:{controller}
listeners=SASL_PLAINTEXT://127.0.0.1:{plain},SASL_SSL://127.0.0.1:{tls},CONTROLLER://127.0.0.1:{controller}
advertised.listeners=SASL_PLAINTEXT://127.0.0.1:{plain},SASL_SSL://127.0.0.1:{tls}
controller.listener.names=CONTROLLER
inter.broker.listener.name=SASL_PLAINTEXT
listener.security.protocol.map=SASL_PLAINTEXT:SASL_PLAINTEXT,SASL_SSL:SASL_SSL,CONTROLLER:PLAINTEXT
sasl.enabled.mechanisms=SCRAM-SHA-512
sasl.mechanism.inter.broker.protocol=SCRAM-SHA-512
listener.name.sasl_plaintext.scram-sha-512.sasl.jaas.config={jaas}
listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config={jaas}
listener.name.sasl_ssl.ssl.keystore.type=PEM
listener.name.sasl_ssl.ssl.keystore.location={keystore}
log.dirs={folder / "data"}
auto.create.topics.enable=false
offsets.topic.replication.factor=1
offsets.topic.num.partitions=3
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
group.initial.rebalance.delay.ms=0
num.network.threads=2
num.io.threads=2
""")
    classpath = f"{libs}/*"
    log = folder / "broker.log"
    jvm = ["java", "-Xmx384m", "-XX:TieredStopAtLevel=1", "-cp", classpath,
           f"-Dkafka.logs.dir={folder}", "-Dlog4j2.configurationFile="
           f"{KAFKA_SH.parent / 'log4j2.properties'}"]
    formatted = subprocess.run(
        [*jvm, "kafka.tools.StorageTool", "format", "--cluster-id", "c2NyYW0tdGVzdC1jbHVzdGVy",
         "--config", str(config),
         "--add-scram", "SCRAM-SHA-512=[name=admin,password=admin-secret]",
         "--add-scram", f"SCRAM-SHA-512=[name={USER},password={PASSWORD}]"],
        capture_output=True, text=True, timeout=120, check=False)
    if formatted.returncode != 0:
        pytest.skip(f"could not format a SCRAM broker: {formatted.stderr[-500:]}")
    with log.open("ab") as out:
        process = subprocess.Popen([*jvm, "kafka.Kafka", str(config)], stdout=out,
                                   stderr=subprocess.STDOUT, start_new_session=True)
    broker = SecureBroker(f"127.0.0.1:{plain}", f"127.0.0.1:{tls}", cert)
    login = {"security_protocol": "SASL_PLAINTEXT", "sasl_mechanism": "SCRAM-SHA-512",
             "sasl_username": USER, "sasl_password": PASSWORD}
    deadline = time.monotonic() + 120
    try:
        while not _answers(broker.sasl_plaintext, **login):
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.skip(f"the SCRAM broker did not come up (log: {log})")
            time.sleep(1)
        yield broker
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def scram_settings(broker: SecureBroker, tiny_bundle: Path, tmp_path: Path, **extra) -> Settings:
    run = f"sec-{uuid.uuid4().hex[:8]}"
    values = dict(bootstrap_servers=broker.sasl_ssl, security_protocol="SASL_SSL",
                  sasl_mechanism="SCRAM-SHA-512", sasl_username=USER, sasl_password=PASSWORD,
                  ssl_cafile=broker.ca_file, app_id=run, events_topic=f"{run}.events",
                  predictions_topic=f"{run}.predictions", dlq_topic=f"{run}.dlq",
                  erasure_topic=f"{run}.erasure", audit_topic=f"{run}.audit", partitions=1,
                  bundle_path=tiny_bundle, data_dir=tmp_path / "data")
    values.update(extra)
    return load_settings(**values)


def test_a_worker_logs_in_with_scram_over_tls_and_predicts(secure_broker, make_topics,
                                                            tiny_bundle, tmp_path):
    # Only SHOPCAST_* settings: SASL_SSL, SCRAM-SHA-512, the CA file; host name checked.
    settings = scram_settings(secure_broker, tiny_bundle, tmp_path, metrics_host="127.0.0.2",
                              metrics_port=free_port())
    make_topics(settings)
    events = toy_stream(60)
    produce(settings, settings.events_topic, keyed(events))
    with WorkerProcess(settings, tmp_path / "worker.log") as worker:
        predictions = consume(settings, settings.predictions_topic, count=len(events),
                              timeout=120)
        # /metrics answers where configured (127.0.0.2), and not on another local address.
        page = urllib.request.urlopen(  # noqa: S310 - a local test URL
            f"http://127.0.0.2:{settings.metrics_port}/metrics", timeout=5).read()
        assert b"shopcast_predictions_total" in page
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", settings.metrics_port), timeout=2).close()
        worker.assert_alive()
    assert len(predictions) == len(events)


def test_a_wrong_password_or_no_tls_trust_is_refused(secure_broker, tiny_bundle, tmp_path):
    good = {"security_protocol": "SASL_PLAINTEXT", "sasl_mechanism": "SCRAM-SHA-512",
            "sasl_username": USER}
    assert _answers(secure_broker.sasl_plaintext, **good, sasl_password=PASSWORD)
    assert not _answers(secure_broker.sasl_plaintext, **good, sasl_password="wrong")
    assert not _answers(secure_broker.sasl_plaintext)  # PLAINTEXT to a SASL listener
    # TLS without trusting the broker's certificate: the handshake fails.
    assert not _answers(secure_broker.sasl_ssl, security_protocol="SASL_SSL",
                        sasl_mechanism="SCRAM-SHA-512", sasl_username=USER,
                        sasl_password=PASSWORD)
