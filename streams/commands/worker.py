"""``shopcast worker``: run the streaming predictor until stopped."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``shopcast worker`` (everything else comes from SHOPCAST_* variables)."""
    parser.add_argument("--bundle", help="model bundle directory (default: SHOPCAST_BUNDLE_PATH)")
    parser.add_argument("--loglevel", default=None,
                        help="log level (default: SHOPCAST_LOG_LEVEL, WARNING)")


def run(args: argparse.Namespace) -> int:
    """Start a Faust worker in the foreground; Ctrl-C or SIGTERM stops it cleanly."""
    from streams.bundle import BundleError
    from streams.settings import load_settings
    from streams.worker_main import run_worker

    overrides = {"bundle_path": args.bundle} if args.bundle else {}
    settings = load_settings(**overrides)
    try:
        return run_worker(settings, loglevel=args.loglevel or settings.log_level)
    except BundleError as exc:
        print(f"shopcast worker: {exc}")
        return 2
