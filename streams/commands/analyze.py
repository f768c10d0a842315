"""``shopcast analyze EVENTS --out DIR``: a behaviour report of an event log."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``shopcast analyze``."""
    parser.add_argument("events", type=Path,
                        help="event log: JSON Lines (.jsonl, .gz) or Parquet")
    parser.add_argument("--out", type=Path, required=True,
                        help="directory for report.html, report.json and the charts")
    parser.add_argument("--workers", type=int, default=None,
                        help="processes splitting the users (default: 1 for small logs, "
                        "else up to 4 cores)")
    parser.add_argument("--json", action="store_true",
                        help="also print the figures as JSON on stdout")


def run(args: argparse.Namespace) -> int:
    """Analyse the log, write the report; print where it is (or the figures)."""
    import orjson

    from streams.analysis.analyze import analyze_log
    from streams.analysis.report import write_report

    if not args.events.is_file():
        print(f"shopcast analyze: {args.events} does not exist", file=sys.stderr)
        return 2
    figures = analyze_log(args.events, workers=args.workers)
    paths = write_report(figures, args.out)
    if args.json:
        sys.stdout.write(orjson.dumps(figures).decode("utf-8") + "\n")
    else:
        log = figures["log"]
        print(f"analysed {log['events']:,} events of {log['users']:,} users in "
              f"{log['seconds']:.1f} s ({log['workers']} processes); report: {paths['html']}")
    return 0
