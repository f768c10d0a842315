"""``shopcast forget USER_ID``: ask the workers to erase a user's window."""

from __future__ import annotations

import argparse
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``shopcast forget``."""
    parser.add_argument("user_id", help="the user to forget")
    parser.add_argument("--no-wait", action="store_true",
                        help="send the request and return without waiting for confirmation")
    parser.add_argument("--timeout", type=float, default=60.0,
                        help="seconds to wait for the worker's confirmation (default: 60)")


def run(args: argparse.Namespace) -> int:
    """Send the request; wait for the worker's audit confirmation unless --no-wait."""
    import asyncio

    from streams.erasure import ErasureRequest, forget
    from streams.settings import load_settings

    settings = load_settings()
    try:
        request = ErasureRequest.new(args.user_id)
    except ValueError as exc:
        print(f"shopcast forget: {exc}", file=sys.stderr)
        return 2
    confirmed = asyncio.run(forget(settings, request, wait=not args.no_wait,
                                   timeout=args.timeout))
    if args.no_wait:
        print(f"erasure request {request.request_id} sent to {settings.erasure_topic}")
        return 0
    if confirmed is None:
        print(f"shopcast forget: request {request.request_id} sent, but no confirmation on "
              f"{settings.audit_topic} within {args.timeout:g} s; is a worker running?",
              file=sys.stderr)
        return 1
    state = "deleted" if confirmed["window_deleted"] else "no window was held"
    print(f"erased: request {request.request_id}, {state}, partition "
          f"{confirmed['partition']}, confirmed by {confirmed['worker']}")
    return 0
