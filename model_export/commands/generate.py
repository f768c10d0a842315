"""``shopcast generate``: simulate a shop and write its event log (and optionally its oracle)."""

from __future__ import annotations

import argparse
import os
import sys
import time


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``shopcast generate``."""
    parser.add_argument("--users", type=int, default=5000, help="number of shoppers")
    parser.add_argument("--items", type=int, default=2000, help="number of catalogue items")
    parser.add_argument("--days", type=float, default=30.0, help="length of the log in days")
    parser.add_argument("--seed", type=int, default=7, help="master seed: same seed, same file")
    parser.add_argument("--out", required=True,
                        help="event log to write (JSON Lines; gzip when it ends in .gz)")
    parser.add_argument("--oracle-out", default=None,
                        help="also write the simulator's own predictions for each user's last "
                             "two events (JSON Lines; see model_export.simulator.oracle)")
    parser.add_argument("--rollouts", type=int, default=None,
                        help="Monte Carlo rollouts per oracle event for the purchase "
                             "probability (default 128)")
    parser.add_argument("--workers", type=int, default=None,
                        help="processes to simulate in (default: up to 2, the CPU count); "
                             "the output does not depend on it")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    """Simulate, write the files and print a one-line summary on stderr."""
    from model_export.simulator.engine import Config
    from model_export.simulator.engine import run as simulate
    from model_export.simulator.oracle import DEFAULT_ROLLOUTS
    from model_export.simulator.writer import write_lines

    workers = args.workers if args.workers is not None else min(2, os.cpu_count() or 1)
    cfg = Config(users=args.users, items=args.items, days=args.days, seed=args.seed,
                 oracle=args.oracle_out is not None,
                 rollouts=args.rollouts if args.rollouts is not None else DEFAULT_ROLLOUTS)
    started = time.perf_counter()
    try:
        sim = simulate(cfg, workers=workers, progress=not args.no_progress)
    except ValueError as exc:
        print(f"shopcast generate: {exc}", file=sys.stderr)
        return 2
    size = write_lines(args.out, sim.lines)
    if args.oracle_out is not None:
        write_lines(args.oracle_out, sim.oracle_lines)
    seconds = time.perf_counter() - started
    users = args.users
    print(f"shopcast generate: {len(sim.lines):,} events from {users:,} users over "
          f"{args.days:g} days, {args.items:,} items, seed {args.seed} -> {args.out} "
          f"({size / 1e6:.1f} MB uncompressed)"
          + (f"; oracle for {len(sim.oracle_lines):,} events -> {args.oracle_out}"
             if args.oracle_out else "")
          + f"; {seconds:.1f} s ({len(sim.lines) / max(seconds, 1e-9):,.0f} events/s)",
          file=sys.stderr)
    return 0
