"""Run a worker process: the Faust app, its thread pool and its /metrics endpoint."""

from __future__ import annotations

import faust

from streams.app import create_worker
from streams.settings import Settings


def run_worker(settings: Settings, *, loglevel: str = "WARNING") -> int:
    """Run until SIGINT/SIGTERM; returns the process exit code."""
    worker = create_worker(settings)
    process = faust.Worker(worker.app, loglevel=loglevel, quiet=True,
                           override_logging=True, redirect_stdouts=False)
    try:
        process.execute_from_commandline()
    except SystemExit as exit_:
        return int(exit_.code or 0)
    finally:
        worker.executor.shutdown(wait=False, cancel_futures=True)
    return 0
