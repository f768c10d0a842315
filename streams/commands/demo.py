"""``shopcast demo``: broker, worker and simulated traffic on this machine, with a live view."""

from __future__ import annotations

import argparse
import os
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``shopcast demo``."""
    parser.add_argument("--duration", type=float, default=None,
                        help="seconds of traffic, then stop (default: until Ctrl-C)")
    parser.add_argument("--rate", type=float, default=500.0,
                        help="events per second to send (default: 500)")
    parser.add_argument("--json", action="store_true",
                        help="print one JSON line with the totals at the end")


def run(args: argparse.Namespace) -> int:
    """Run the demo; exit 0 when every valid event got its prediction."""
    import orjson

    from streams.demo import pick_metrics_port, run_demo
    from streams.settings import load_settings

    if args.rate <= 0:
        print("shopcast demo: --rate must be positive", file=sys.stderr)
        return 2
    settings = pick_metrics_port(load_settings())
    external = "SHOPCAST_BOOTSTRAP_SERVERS" in os.environ
    out = sys.stderr if args.json else sys.stdout
    try:
        summary = run_demo(settings, duration=args.duration, rate=args.rate, out=out,
                           external_broker=external)
    except RuntimeError as exc:
        print(f"shopcast demo: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(orjson.dumps(summary).decode())
    return 0 if summary["predictions"] >= summary["events"] else 1
