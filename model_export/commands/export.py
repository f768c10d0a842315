"""``shopcast export CHECKPOINT --out BUNDLE``: a checkpoint to a verified ONNX bundle."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

DEFAULT_TOP_K = 100  # kept here too so --help never imports torch


def add_bundle_arguments(parser: argparse.ArgumentParser) -> None:
    """Options shared by ``train`` and ``export`` (they write bundles the same way)."""
    parser.add_argument("--top-k", type=int, default=DEFAULT_TOP_K,
                        help="items returned per prediction by the graph")
    parser.add_argument("--int8", action="store_true",
                        help="dynamic int8 quantization; the metric change goes in the manifest")
    parser.add_argument("--oracle", type=Path, default=None,
                        help="simulator oracle file, to report the oracle's metrics too")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``shopcast export``."""
    parser.add_argument("checkpoint", type=Path, help="checkpoint written by 'shopcast train'")
    parser.add_argument("--out", type=Path, required=True, help="bundle directory to write")
    parser.add_argument("--events", type=Path, default=None,
                        help="event log to evaluate on (default: the training log, if unchanged)")
    parser.add_argument("--threads", type=int, default=2, help="onnxruntime threads")
    add_bundle_arguments(parser)


def run(args: argparse.Namespace) -> int:
    """Export, check parity, evaluate and write the bundle."""
    from model_export.checkpoint import Checkpoint
    from model_export.data import read_events
    from model_export.export import ExportError, export_bundle

    try:
        checkpoint = Checkpoint.load(args.checkpoint)
        log = read_events(args.events) if args.events else None
        bundle = export_bundle(checkpoint, args.out, top_k=args.top_k, int8=args.int8, log=log,
                               oracle=args.oracle, threads=args.threads)
    except (ExportError, ValueError, FileNotFoundError) as exc:
        print(f"shopcast export: {exc}", file=sys.stderr)
        return 1
    print(f"bundle written to {bundle}", file=sys.stderr)
    return 0
