"""``shopcast evaluate BUNDLE EVENTS``: the bundle vs the baselines on the test split."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``shopcast evaluate``."""
    parser.add_argument("bundle", type=Path, help="model bundle directory")
    parser.add_argument("events", type=Path, help="event log (the split is made as in training)")
    parser.add_argument("--oracle", type=Path, default=None,
                        help="the simulator's oracle file (shopcast generate --oracle-out)")
    parser.add_argument("--json", action="store_true",
                        help='print one JSON object {"model", "baselines", "n_test"} '
                             '(and "segments" with --by-segment)')
    parser.add_argument("--plot", type=Path, default=Path("evaluation_by_history_length.png"),
                        help="PNG of metrics by history length ('-' for none)")
    parser.add_argument("--by-segment", action="store_true",
                        help="also report metrics per user segment (new vs returning, history "
                             "length, main category, activity level), popularity bias and "
                             "catalogue coverage")
    parser.add_argument("--segment-plot", type=Path,
                        default=Path("evaluation_by_segment.png"),
                        help="PNG of ndcg@10 per segment, with --by-segment ('-' for none)")
    parser.add_argument("--threads", type=int, default=2, help="onnxruntime threads")


def run(args: argparse.Namespace) -> int:
    """Evaluate and print the table (or the JSON object)."""
    import orjson

    from model_export.data import read_events
    from model_export.evaluate import evaluate, format_table, plot_by_history_length
    from model_export.fairness import format_segments, plot_segments
    from streams.bundle import BundleError, load_bundle

    try:
        bundle = load_bundle(args.bundle)
        log = read_events(args.events)
        report = evaluate(bundle, log, oracle=args.oracle, threads=args.threads,
                          by_segment=args.by_segment)
    except (BundleError, FileNotFoundError, ValueError) as exc:
        print(f"shopcast evaluate: {exc}", file=sys.stderr)
        return 2
    if str(args.plot) != "-":
        plot_by_history_length(report, args.plot)
        print(f"plot written to {args.plot}", file=sys.stderr)
    if args.by_segment and str(args.segment_plot) != "-":
        plot_segments(report["segments"], args.segment_plot)
        print(f"segment plot written to {args.segment_plot}", file=sys.stderr)
    if args.json:
        out = {k: report[k] for k in ("model", "baselines", "n_test", "segments") if k in report}
        sys.stdout.write(orjson.dumps(out).decode() + "\n")
    else:
        print(format_table(report))
        if args.by_segment:
            print()
            print(format_segments(report["segments"]))
        for line in report["shortfalls"]:
            print(line, file=sys.stderr)
    return 0
