"""``shopcast topics create|list``: shopcast's topics on the broker the settings name."""

from __future__ import annotations

import argparse
import asyncio
import sys

from streams.settings import Settings, load_settings


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Declare ``create [--if-missing]`` and ``list``."""
    sub = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    create = sub.add_parser(
        "create", help="create the events, predictions, dlq, erasure, audit and changelog topics",
        description="Create shopcast's topics with SHOPCAST_PARTITIONS partitions and "
        "SHOPCAST_REPLICATION_FACTOR replicas on SHOPCAST_BOOTSTRAP_SERVERS.")
    create.add_argument(
        "--if-missing", action="store_true",
        help="succeed when topics already exist with the right partition count (without it, "
        "an existing topic is an error)")
    create.add_argument("--timeout", type=float, default=30.0, help="seconds (default 30)")
    listing = sub.add_parser("list", help="list the broker's topics and partition counts")
    listing.add_argument("--all", action="store_true", help="include internal topics")
    listing.add_argument("--timeout", type=float, default=30.0, help="seconds (default 30)")


def run(args: argparse.Namespace) -> int:
    """Create or list topics; exit 1 when a topic is missing, mismatched or the broker is down."""
    from streams.topics import TopicsError

    settings = load_settings()
    try:
        if args.action == "create":
            return _create(settings, args.if_missing, args.timeout)
        return _list(settings, args.all, args.timeout)
    except TopicsError as exc:
        print(f"shopcast topics: {exc}", file=sys.stderr)
        return 1


def _create(settings: Settings, if_missing: bool, timeout: float) -> int:
    from streams.topics import PARTITIONS_ADVICE, create_topics

    results = asyncio.run(create_topics(settings, timeout=timeout))
    failed = False
    width = max(len(r.spec.name) for r in results)
    for result in results:
        bad = result.status in ("mismatch", "error") or (
            result.status == "exists" and not if_missing)
        failed |= bad
        print(f"{result.spec.name.ljust(width)}  {result.status:8}  {result.detail}",
              file=sys.stderr if bad else sys.stdout)
    if any("SHOPCAST_PARTITIONS" in r.detail for r in results):
        print(PARTITIONS_ADVICE, file=sys.stderr)
    if failed and all(r.status in ("created", "exists") for r in results):
        print("some topics already exist; pass --if-missing to accept existing topics",
              file=sys.stderr)
    return 1 if failed else 0


def _list(settings: Settings, include_internal: bool, timeout: float) -> int:
    from streams.topics import list_topics

    topics = asyncio.run(list_topics(settings, timeout=timeout))
    for name in sorted(topics):
        if include_internal or not name.startswith("__"):
            print(f"{name}\t{topics[name]}")
    return 0
