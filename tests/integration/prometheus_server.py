"""A real Prometheus server for integration tests, configured from deploy/prometheus.

:class:`PrometheusServer` runs the ``prometheus`` binary (Debian's ``prometheus`` package, which
``.ci/tools.sh`` installs; ``SHOPCAST_TEST_PROMETHEUS`` may name another binary) on a free port
of 127.0.0.1, with its storage in a temporary directory. Its configuration is the one the stack
deploys (``deploy/prometheus/prometheus.yml`` with ``alerts.yml``), with the shopcast job's
targets replaced by the test's workers and every interval shortened to one second, so a test
checks the deployed scrape config and alert rules, not a copy of them.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import yaml

from streams.embedded_broker import free_port

REPO = Path(__file__).resolve().parents[2]
DEPLOYED_CONFIG = REPO / "deploy" / "prometheus" / "prometheus.yml"
WORKER_JOB = "shopcast"


def prometheus_binary() -> str | None:
    """The Prometheus server binary to use, or None when there is none."""
    configured = os.environ.get("SHOPCAST_TEST_PROMETHEUS")
    if configured:
        return configured if Path(configured).is_file() else None
    return shutil.which("prometheus")


def scrape_config_for(worker_targets: list[str], listen: str, interval: str = "1s"
                      ) -> dict[str, Any]:
    """The deployed Prometheus config, pointed at ``worker_targets`` with short intervals."""
    config = yaml.safe_load(DEPLOYED_CONFIG.read_text())
    config["global"]["scrape_interval"] = interval
    config["global"]["evaluation_interval"] = interval
    # Rule files are relative to the deployed config, not to the generated one.
    config["rule_files"] = [str(DEPLOYED_CONFIG.parent / f) for f in config.get("rule_files", [])]
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert WORKER_JOB in jobs, f"{DEPLOYED_CONFIG} has no job {WORKER_JOB!r}"
    for job in jobs.values():
        job["scrape_interval"] = interval
    labels = jobs[WORKER_JOB]["static_configs"][0].get("labels", {})
    jobs[WORKER_JOB]["static_configs"] = [{"targets": worker_targets, "labels": labels}]
    if "prometheus" in jobs:
        jobs["prometheus"]["static_configs"] = [{"targets": [listen]}]
    return config


class PrometheusServer:
    """One Prometheus process scraping the given worker targets; a context manager."""

    def __init__(self, binary: str, workdir: Path, worker_targets: list[str]) -> None:
        self.binary = binary
        self.workdir = workdir
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.config = scrape_config_for(worker_targets, self.address)
        self.process: subprocess.Popen[bytes] | None = None
        self.log_path = workdir / "prometheus.log"

    @property
    def url(self) -> str:
        """The server's base URL."""
        return f"http://{self.address}"

    def start(self, timeout: float = 60.0) -> PrometheusServer:
        """Write the config, start the server and wait until it reports ready."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        config_path = self.workdir / "prometheus.yml"
        config_path.write_text(yaml.safe_dump(self.config, sort_keys=False))
        log = open(self.log_path, "ab")  # noqa: SIM115 - lives as long as the process
        self.process = subprocess.Popen(
            [self.binary, f"--config.file={config_path}",
             f"--storage.tsdb.path={self.workdir / 'data'}",
             f"--web.listen-address={self.address}", "--log.level=warn"],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while True:
            if self.process.poll() is not None:
                raise AssertionError(f"prometheus exited with {self.process.returncode}:\n"
                                     + self.log_tail())
            try:
                with urllib.request.urlopen(f"{self.url}/-/ready", timeout=2) as response:  # noqa: S310
                    if response.status == 200:
                        return self
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"prometheus not ready within {timeout:.0f} s:\n"
                                     + self.log_tail())
            time.sleep(0.2)

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after 20 s."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def api(self, path: str, **params: str) -> Any:
        """GET ``/api/v1/<path>``; returns ``data`` of a successful answer, raises otherwise."""
        query = f"?{urllib.parse.urlencode(params)}" if params else ""
        try:
            with urllib.request.urlopen(f"{self.url}/api/v1/{path}{query}", timeout=10) as resp:  # noqa: S310
                body = json.loads(resp.read())
        except urllib.error.HTTPError as exc:  # 400/422: a bad query; the body says why
            body = json.loads(exc.read() or b"{}")
        if body.get("status") != "success":
            raise AssertionError(f"/api/v1/{path} {params}: {body.get('errorType')}: "
                                 f"{body.get('error')}")
        return body["data"]

    def query(self, promql: str) -> list[dict[str, Any]]:
        """An instant query; returns the result vector (``[{"metric": ..., "value": ...}]``)."""
        data = self.api("query", query=promql)
        assert data["resultType"] == "vector", (promql, data["resultType"])
        return data["result"]

    def log_tail(self, lines: int = 40) -> str:
        """The end of the server's log."""
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def __enter__(self) -> PrometheusServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
