"""``shopcast broker [--port P]``: the embedded tansu broker in the foreground; Ctrl-C stops it."""

from __future__ import annotations

import argparse
import signal
import sys
import time
from pathlib import Path
from types import FrameType

from streams.embedded_broker import DEFAULT_PORT


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Declare ``--port``, ``--log-file`` and ``--create-topics``."""
    parser.add_argument("--port", type=int, default=DEFAULT_PORT,
                        help=f"port on 127.0.0.1 (default {DEFAULT_PORT})")
    parser.add_argument("--log-file", type=Path, default=None,
                        help="where tansu's log goes (default: a file in the temp directory)")
    parser.add_argument("--create-topics", action="store_true",
                        help="create shopcast's topics (SHOPCAST_* settings) once it answers")


def _stop_on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def run(args: argparse.Namespace) -> int:
    """Run tansu until Ctrl-C or SIGTERM; exit 1 if it cannot start or dies on its own."""
    from streams.embedded_broker import BrokerError, EmbeddedBroker

    broker = EmbeddedBroker(args.port, log_path=args.log_file)
    signal.signal(signal.SIGTERM, _stop_on_sigterm)
    try:
        broker.start()
        seconds = broker.wait_ready()
        print(f"tansu (embedded, memory storage) listening on {broker.bootstrap}, ready in "
              f"{seconds:.2f} s; log: {broker.log_path}", flush=True)
        if args.create_topics:
            _create_topics(broker.bootstrap)
        print(f"use it: export SHOPCAST_BOOTSTRAP_SERVERS={broker.bootstrap}\n"
              "Ctrl-C stops it; topics and records live in memory and are lost.", flush=True)
        while broker.running:
            time.sleep(0.5)
        print(f"shopcast broker: tansu exited on its own; its log ends with:\n"
              f"{broker.log_tail()}", file=sys.stderr)
        return 1
    except BrokerError as exc:
        print(f"shopcast broker: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("stopping tansu", flush=True)
        return 0
    finally:
        broker.stop()


def _create_topics(bootstrap: str) -> None:
    import asyncio

    from streams.settings import load_settings
    from streams.topics import ensure_topics

    settings = load_settings(bootstrap_servers=bootstrap)
    for result in asyncio.run(ensure_topics(settings)):
        print(f"  topic {result.spec.name}: {result.status} ({result.detail})", flush=True)
