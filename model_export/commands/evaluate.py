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
                        help='print one JSON object {"model", "baselines", "n_test"}')
    parser.add_argument("--plot", type=Path, default=Path("evaluation_by_history_length.png"),
                        help="PNG of metrics by history length ('-' for none)")
    parser.add_argument("--threads", type=int, default=2, help="onnxruntime threads")


def run(args: argparse.Namespace) -> int:
    """Evaluate and print the table (or the JSON object)."""
    import orjson

    from model_export.data import read_events
    from model_export.evaluate import evaluate, format_table, plot_by_history_length
    from streams.bundle import BundleError, load_bundle

    try:
        bundle = load_bundle(args.bundle)
        log = read_events(args.events)
        report = evaluate(bundle, log, oracle=args.oracle, threads=args.threads)
    except (BundleError, FileNotFoundError, ValueError) as exc:
        print(f"shopcast evaluate: {exc}", file=sys.stderr)
        return 2
    if str(args.plot) != "-":
        plot_by_history_length(report, args.plot)
        print(f"plot written to {args.plot}", file=sys.stderr)
    if args.json:
        out = {k: report[k] for k in ("model", "baselines", "n_test")}
        sys.stdout.write(orjson.dumps(out).decode() + "\n")
    else:
        print(format_table(report))
        for line in report["shortfalls"]:
            print(line, file=sys.stderr)
    return 0
