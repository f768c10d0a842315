"""Security basics that need no broker: nothing that can execute data near input, raw bytes
only on the wire, and /metrics bound where configured.

The SASL/SCRAM and TLS connection itself is tested against a secured Apache Kafka in
tests/integration/test_security.py; the mapping of settings to client options in
tests/unit/test_kafka_config.py.
"""

from __future__ import annotations

import ast
import socket
import ssl
import urllib.request
from pathlib import Path

import pytest

from streams.metrics import WorkerMetrics
from streams.settings import SettingsError, load_settings

STREAMS = Path(__file__).parents[2] / "streams"
# Modules that turn bytes into code or objects: none may be imported by serving code.
UNSAFE_MODULES = {"pickle", "cPickle", "_pickle", "dill", "cloudpickle", "marshal", "shelve",
                  "jsonpickle"}
UNSAFE_CALLS = {"eval", "exec", "compile", "__import__"}


def python_files() -> list[Path]:
    return sorted(STREAMS.rglob("*.py"))


def unsafe_uses(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found = []
    for node in ast.walk(tree):
        where = f"{path.name}:{getattr(node, 'lineno', 0)}"
        if isinstance(node, ast.Import):
            found += [f"{where} import {a.name}" for a in node.names
                      if a.name.split(".")[0] in UNSAFE_MODULES]
        elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] \
                in UNSAFE_MODULES:
            found.append(f"{where} from {node.module} import ...")
        elif isinstance(node, ast.Call):
            func = node.func
            name = func.id if isinstance(func, ast.Name) else \
                func.attr if isinstance(func, ast.Attribute) else ""
            if isinstance(func, ast.Name) and name in UNSAFE_CALLS:
                found.append(f"{where} {name}()")
            if name in ("load", "loads") and isinstance(func, ast.Attribute) and \
                    isinstance(func.value, ast.Name) and func.value.id in ("yaml", "torch"):
                found.append(f"{where} {func.value.id}.{name}()")
            for keyword in node.keywords:
                if keyword.arg in ("allow_pickle", "shell") and \
                        isinstance(keyword.value, ast.Constant) and keyword.value.value is True:
                    found.append(f"{where} {keyword.arg}=True")
    return found


def test_serving_code_never_unpickles_or_evaluates_anything():
    files = python_files()
    assert len(files) > 20
    assert [use for path in files for use in unsafe_uses(path)] == []


def test_the_scan_would_notice(tmp_path):
    sample = tmp_path / "sample.py"
    sample.write_text("import pickle\nx = eval('1')\nimport numpy as np\n"
                      "np.load('f', allow_pickle=True)\n")
    assert len(unsafe_uses(sample)) == 3


def test_the_worker_reads_and_writes_raw_bytes_only(tiny_bundle):
    # Faust's default codecs include pickle; shopcast's topics and table use raw bytes, and
    # every payload is parsed by the contracts (JSON) or the window format (struct).
    from streams.app import create_worker

    worker = create_worker(load_settings(bundle_path=tiny_bundle, bundle_watch_seconds=0))
    conf = worker.app.conf
    assert (conf.key_serializer, conf.value_serializer) == ("raw", "raw")
    assert worker.table.key_serializer == worker.table.value_serializer == "raw"
    for topic in worker.app.topics:
        assert topic.key_serializer in (None, "raw") and topic.value_serializer in (None, "raw")
    worker.executor.shutdown(wait=False)


def test_metrics_are_served_only_on_the_configured_address():
    metrics = WorkerMetrics()
    port = metrics.serve("127.0.0.2", 0)
    page = urllib.request.urlopen(f"http://127.0.0.2:{port}/metrics", timeout=5).read()  # noqa: S310
    assert b"shopcast_predictions_total" in page
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
    # The default is loopback only: /metrics is not published unless asked to be.
    assert load_settings().metrics_host == "127.0.0.1"


def test_tls_host_name_checking_can_be_turned_off_but_certificates_are_still_verified():
    from streams.kafka_config import client_kwargs

    settings = load_settings(bootstrap_servers="k:9093", security_protocol="SSL",
                             ssl_check_hostname=False)
    context = client_kwargs(settings)["ssl_context"]
    assert context.check_hostname is False
    assert context.verify_mode == ssl.CERT_REQUIRED


def test_sasl_needs_credentials_and_errors_never_show_the_password():
    with pytest.raises(SettingsError, match="SHOPCAST_SASL_USERNAME"):
        load_settings(security_protocol="SASL_SSL")
    with pytest.raises(SettingsError) as error:
        load_settings(security_protocol="SASL_SSL", sasl_username="shop",
                      sasl_password="hunter2-secret", partitions=0)
    assert "hunter2-secret" not in str(error.value)
    settings = load_settings(security_protocol="SASL_SSL", sasl_username="shop",
                             sasl_password="hunter2-secret")
    assert "hunter2-secret" not in repr(settings)
