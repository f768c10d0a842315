"""Running real ``shopcast worker`` processes in integration tests.

A worker is started exactly as an operator would start it (``python -m
streams.cli worker`` with ``SHOPCAST_*`` variables), so tests cover the
command line, settings and process lifecycle too. Its output goes to a log
file that is printed when a test fails.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from streams.embedded_broker import free_port
from streams.settings import Settings

REPO = Path(__file__).resolve().parents[2]


class WorkerProcess:
    """One worker process; use as a context manager or call start/stop/kill."""

    def __init__(self, settings: Settings, log_path: Path, *, name: str = "worker",
                 extra_env: dict[str, str] | None = None) -> None:
        if settings.metrics_port in (0, 9100):  # several workers per host: each its own port
            settings = settings.model_copy(update={"metrics_port": free_port()})
        self.settings = settings
        self.log_path = log_path
        self.name = name
        self.extra_env = extra_env or {}
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def metrics_url(self) -> str:
        """The worker's /metrics URL."""
        return f"http://{self.settings.metrics_host}:{self.settings.metrics_port}/metrics"

    def start(self) -> WorkerProcess:
        """Start the process (returns at once; it joins the group in the background)."""
        env = {**os.environ, **self.settings.to_environment(), **self.extra_env,
               "PYTHONUNBUFFERED": "1"}
        env.setdefault("SHOPCAST_LOG_LEVEL", "INFO")
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")  # noqa: SIM115 - lives as long as the process
        self.process = subprocess.Popen(
            [sys.executable, "-m", "streams.cli", "worker"], cwd=REPO, env=env,
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        return self

    @property
    def alive(self) -> bool:
        """True while the process runs."""
        return self.process is not None and self.process.poll() is None

    def stop(self, timeout: float = 30.0) -> int | None:
        """Graceful stop (SIGTERM), then SIGKILL after ``timeout``; returns the exit code."""
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode

    def kill(self) -> None:
        """SIGKILL: a crash, with no chance to commit or flush anything."""
        if self.alive:
            assert self.process is not None
            self.process.send_signal(signal.SIGKILL)
            self.process.wait()

    def metrics(self, timeout: float = 5.0) -> str:
        """The text of the worker's /metrics page."""
        with urllib.request.urlopen(self.metrics_url, timeout=timeout) as response:  # noqa: S310
            return response.read().decode()

    def wait_for_metrics(self, timeout: float = 60.0) -> str:
        """Wait until /metrics answers (the process has loaded its bundle)."""
        deadline = time.monotonic() + timeout
        while True:
            self.assert_alive()
            try:
                return self.metrics()
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)

    def assert_alive(self) -> None:
        """Fail with the end of the log if the process has exited."""
        if self.process is not None and self.process.poll() is not None:
            raise AssertionError(f"{self.name} exited with code {self.process.returncode}:\n"
                                 + self.log_tail())

    def log_tail(self, lines: int = 60) -> str:
        """The end of the worker's log."""
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def __enter__(self) -> WorkerProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def metric_value(text: str, name: str, labels: dict[str, str] | None = None) -> float:
    """The value of one sample in a /metrics page (0 when absent)."""
    want = ",".join(f'{k}="{v}"' for k, v in (labels or {}).items())
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        head, _, value = line.rpartition(" ")
        if head == name or head == f"{name}{{{want}}}":
            return float(value)
    return 0.0
