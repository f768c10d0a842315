"""Run a worker process: the Faust app, its scorer thread and its /metrics endpoint."""

from __future__ import annotations

import gc
import logging
import sys

import faust

from streams.app import create_worker
from streams.metrics import WorkerMetrics
from streams.settings import Settings, SettingsError

log = logging.getLogger("shopcast.worker")

# How long a thread may hold the GIL while another waits for it (Python's default: 5 ms).
# Three threads share it: the event loop, Faust's consumer thread and the scorer. A
# fetched batch or a scored chunk changes threads on its way through, and each change
# could wait for the other thread's whole interval: at low load that was latency, not
# throughput.
GIL_SWITCH_INTERVAL_S = 0.001


def freeze_startup_objects() -> int:
    """Exempt every object alive now from the garbage collector's later full collections.

    The modules, Faust and the bundle leave about 100,000 objects that live as long as
    the process, and every full (generation 2) collection visited them all while holding
    the GIL, stalling every thread of the worker: 96-159 ms each, every few seconds
    under load; 36-87 ms with them frozen. Returns how many were frozen.
    """
    gc.collect()  # what is garbage already goes now, rather than being kept forever
    gc.freeze()
    return gc.get_freeze_count()


def run_worker(settings: Settings, *, loglevel: str = "WARNING") -> int:
    """Run until SIGINT/SIGTERM; returns the process exit code."""
    sys.setswitchinterval(GIL_SWITCH_INTERVAL_S)
    metrics = WorkerMetrics()
    worker = create_worker(settings, metrics=metrics)
    try:
        port = metrics.serve(settings.metrics_host, settings.metrics_port)
    except OSError as exc:
        raise SettingsError(
            f"SHOPCAST_METRICS_PORT: cannot serve /metrics on {settings.metrics_host}:"
            f"{settings.metrics_port} ({exc.strerror}); give each worker on a host its own "
            "port, or 0 for a free one") from None
    # WARNING, not INFO: with port 0 this line is the only way to find the endpoint.
    log.warning("metrics on http://%s:%d/metrics", settings.metrics_host, port)
    process = faust.Worker(worker.app, loglevel=loglevel, quiet=True,
                           override_logging=True, redirect_stdouts=False)
    # No terminal spinner: with one, Faust sets the root logger to DEBUG so that every
    # record spins it, and every library's debug record in the hot path (aiokafka logs a
    # few per fetch and send) is built and then dropped -- measurable CPU, and escape
    # codes in the log files.
    process.spinner = None
    frozen = freeze_startup_objects()
    log.info("%d objects from start-up are exempt from garbage collection", frozen)
    try:
        process.execute_from_commandline()
    except SystemExit as exit_:
        return int(exit_.code or 0)
    finally:
        worker.executor.shutdown(wait=False, cancel_futures=True)
    return 0
