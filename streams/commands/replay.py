"""``shopcast replay FILE``: produce an event log to Kafka, keyed by user, at a chosen pace."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``shopcast replay``."""
    parser.add_argument("file", type=Path, help="event log: JSON Lines (.jsonl, .gz) or Parquet")
    pace = parser.add_mutually_exclusive_group()
    pace.add_argument("--rate", type=float, help="events per second")
    pace.add_argument("--speed", type=float,
                      help="times the log's own timing (2 = twice as fast as it happened)")
    pace.add_argument("--max", action="store_true", help="as fast as the broker takes them "
                      "(the default)")
    parser.add_argument("--topic", help="target topic (default: SHOPCAST_EVENTS_TOPIC)")
    parser.add_argument("--retime", action="store_true",
                        help="shift every event's ts by the same amount so the log's newest "
                        "event lands at the time the replay starts (gaps are kept)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    """Replay the file; print how many records went out and how fast."""
    import asyncio

    from tqdm import tqdm

    from streams.eventlog import count_records, read_log
    from streams.kafka_config import client_kwargs
    from streams.replay import Pacing, replay
    from streams.settings import load_settings

    settings = load_settings()
    if not args.file.is_file():
        print(f"shopcast replay: {args.file} does not exist", file=sys.stderr)
        return 2
    try:
        pacing = Pacing(rate=args.rate, speed=args.speed)
    except ValueError as exc:
        print(f"shopcast replay: {exc}", file=sys.stderr)
        return 2
    topic = args.topic or settings.events_topic
    total = count_records(args.file)
    transform = retimer(args.file) if args.retime else None
    bar = tqdm(total=total, unit="ev", desc=f"replay → {topic}", disable=args.quiet,
               file=sys.stderr, mininterval=0.5)
    try:
        result = asyncio.run(replay(read_log(args.file), topic=topic,
                                    client=client_kwargs(settings), pacing=pacing,
                                    on_sent=lambda record, at: bar.update(1),
                                    transform=transform))
    except KeyboardInterrupt:
        bar.close()
        print(f"shopcast replay: interrupted after {bar.n:,} of {total:,} records",
              file=sys.stderr)
        return 130
    bar.close()
    note = f" ({result.without_user:,} without a user id, sent unkeyed)" \
        if result.without_user else ""
    print(f"sent {result.sent:,} records to {topic} in {result.seconds:.1f} s "
          f"({result.rate:,.0f}/s){note}")
    return 0


def retimer(path: Path):  # type: ignore[no-untyped-def]
    """A replay transform moving every event's ``ts`` by (now - the log's newest ts)."""
    import time

    import orjson

    from streams.eventlog import LogRecord, read_log

    newest = max((r.ts_ms for r in read_log(path) if r.ts_ms is not None), default=None)
    if newest is None:
        return None
    shift = int(time.time() * 1000) - newest

    def shifted(record: LogRecord) -> LogRecord:
        if record.ts_ms is None:
            return record  # not an event we can read: sent unchanged
        event = orjson.loads(record.value)
        event["ts"] = record.ts_ms + shift
        return LogRecord(orjson.dumps(event), record.user_id, event["ts"])

    return shifted
