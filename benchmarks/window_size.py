"""Bytes per user in the window table: the stored windows of a simulated shop.

    python benchmarks/window_size.py [--users 2000] [--margin 0] [--json]

Admits a simulated log (the default bundle's shop) through the worker's own pipeline
into a plain dict, as the worker's table stores it, and prints the size of the stored
value per user: mean, largest, and a full window (window_length events), against the
1 KB target for a full 50-event window. ``--margin`` is SHOPCAST_REDELIVERY_MARGIN.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from model_export.simulator import simulate  # noqa: E402
from streams.bundle import load_bundle  # noqa: E402
from streams.encoding import Encoder  # noqa: E402
from streams.pipeline import Incoming, Pipeline  # noqa: E402
from streams.settings import DEFAULT_BUNDLE  # noqa: E402
from streams.window import HEADER_BYTES  # noqa: E402

TARGET_BYTES = 1024
DAY_MS = 86_400_000


def measure(users: int, margin: int) -> dict[str, object]:
    """Admit a simulated shop's log and measure the stored windows."""
    bundle = load_bundle(DEFAULT_BUNDLE)
    encoder = Encoder(bundle.spec, bundle.items, bundle.categories)
    pipeline = Pipeline(encoder, window_length=None, ttl_ms=30 * DAY_MS,
                        max_future_ms=DAY_MS, redelivery_margin=margin)
    lines = simulate(users=users, items=len(bundle.items.tokens), days=30, seed=7).lines
    table: dict[bytes, bytes] = {}
    now_ms = 0
    started = time.perf_counter()
    n = 0
    for n, line in enumerate(lines, 1):
        now_ms = max(now_ms, json.loads(line)["ts"])
        pipeline.admit(Incoming(None, line, "events.rekeyed", 0, n), table, now_ms=now_ms)
    seconds = time.perf_counter() - started
    sizes = np.array([len(v) for v in table.values()])
    full = HEADER_BYTES + pipeline.capacity * encoder.itemsize
    return {"users": len(table), "events": n, "window_length": pipeline.window_length,
            "redelivery_margin": margin, "record_bytes": encoder.itemsize,
            "header_bytes": HEADER_BYTES, "full_window_bytes": full,
            "mean_bytes": round(float(sizes.mean()), 1), "max_bytes": int(sizes.max()),
            "users_with_full_window": int((sizes == full).sum()),
            "target_bytes": TARGET_BYTES, "full_window_within_target": full <= TARGET_BYTES,
            "admit_us_per_event": round(seconds / n * 1e6, 1)}


def main() -> None:
    """Command line: print the figures (a table, or one JSON line)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=2000)
    parser.add_argument("--margin", type=int, default=0, help="SHOPCAST_REDELIVERY_MARGIN")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    result = measure(args.users, args.margin)
    if args.json:
        print(json.dumps(result))
        return
    for key, value in result.items():
        print(f"{key:>26}: {value}")


if __name__ == "__main__":
    main()
