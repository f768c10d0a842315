"""``shopcast capture TOPIC --out FILE``: write a topic to a JSON Lines file."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``shopcast capture``."""
    parser.add_argument("topic", help="topic to read")
    parser.add_argument("--out", type=Path, required=True,
                        help="output file (.jsonl, or .gz for gzip)")
    parser.add_argument("--from-beginning", action="store_true",
                        help="start at the oldest record (default: only new records)")
    parser.add_argument("--max", type=int, default=None, help="stop after N records")
    parser.add_argument("--idle", type=float, default=5.0,
                        help="stop after S seconds without a new record (default: 5)")
    parser.add_argument("--envelope", action="store_true",
                        help="wrap every record with topic, partition, offset, timestamp, key")


def run(args: argparse.Namespace) -> int:
    """Capture until --max records or --idle seconds of silence."""
    import asyncio

    from tqdm import tqdm

    from streams.capture import capture
    from streams.eventlog import LogWriter
    from streams.kafka_config import client_kwargs
    from streams.settings import load_settings

    settings = load_settings()
    bar = tqdm(total=args.max, unit="rec", desc=f"capture ← {args.topic}", file=sys.stderr,
               mininterval=0.5)
    try:
        with LogWriter(args.out) as writer:
            result = asyncio.run(capture(
                args.topic, writer, client=client_kwargs(settings),
                from_beginning=args.from_beginning, max_records=args.max,
                idle_seconds=args.idle, envelope_all=args.envelope,
                on_record=lambda record: bar.update(1)))
    except ValueError as exc:
        bar.close()
        print(f"shopcast capture: {exc}", file=sys.stderr)
        return 2
    bar.close()
    wrapped = f" ({result.wrapped:,} wrapped: not one-line JSON)" if result.wrapped else ""
    print(f"wrote {result.written:,} records from {args.topic} to {args.out}{wrapped}")
    return 0
