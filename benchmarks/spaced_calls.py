"""CPU per scoring call, back to back and with pauses between calls, as live traffic has.

    python benchmarks/spaced_calls.py [--events 4] [--calls 300] [--rounds 3] [--json]

The worker scores what one fetch brings. Flat out, calls follow each other; under live
traffic each waits for the next fetch, and the threads sleep in between. This scores
chunks of ``--events`` events of a simulated shop with the worker's own pipeline and
scorer (the default bundle, user states held), and measures the CPU time (not wall
time) of each call: back to back, and after a pause of 1 ms and 10 ms. The pauses
alternate within each round, so drift of the shared machine falls on all of them.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from model_export.simulator import simulate  # noqa: E402
from streams.bundle import load_bundle  # noqa: E402
from streams.encoding import Encoder  # noqa: E402
from streams.pipeline import Incoming, Pipeline, Ready  # noqa: E402
from streams.scorer import Scorer  # noqa: E402
from streams.settings import DEFAULT_BUNDLE  # noqa: E402

PAUSES_S = (0.0, 0.001, 0.010)
DAY_MS = 86_400_000


def chunks_of_a_shop(encoder: Encoder, items: int, size: int) -> Iterator[list[Ready]]:
    """Admitted events of a simulated shop, in log order, ``size`` at a time."""
    pipeline = Pipeline(encoder, window_length=None, ttl_ms=30 * DAY_MS,
                        max_future_ms=DAY_MS)
    table: dict[bytes, bytes] = {}
    ready: list[Ready] = []
    for n, line in enumerate(simulate(users=2000, items=items, days=30, seed=11).lines):
        outcome = pipeline.admit(Incoming(None, line, "events.rekeyed", 0, n), table,
                                 now_ms=json.loads(line)["ts"])
        if isinstance(outcome, Ready):
            ready.append(outcome)
        if len(ready) == size:
            yield ready
            ready = []


def measure(events: int, calls: int, rounds: int) -> dict[str, Any]:
    """Mean CPU milliseconds per call, by pause before it."""
    bundle = load_bundle(DEFAULT_BUNDLE)
    scorer = Scorer(bundle, top_k=10, state_users=100_000)
    encoder = Encoder(bundle.spec, bundle.items, bundle.categories)
    chunks = chunks_of_a_shop(encoder, len(bundle.items.tokens), events)

    def call(chunk: list[Ready]) -> float:
        started = time.thread_time()
        scorer.predict([r.event for r in chunk], [r.records for r in chunk], scored_at=0)
        return time.thread_time() - started

    for chunk in itertools.islice(chunks, calls):  # warm-up: sessions, states, allocator
        call(chunk)
    cpu: dict[float, list[float]] = {pause: [] for pause in PAUSES_S}
    for round_ in range(1, rounds + 1):
        for pause in PAUSES_S:
            for chunk in itertools.islice(chunks, calls):
                if pause:
                    time.sleep(pause)
                cpu[pause].append(call(chunk))
        print(f"round {round_}/{rounds}: " + ", ".join(
            f"{_label(p)} {1e3 * np.mean(cpu[p]):.2f} ms" for p in PAUSES_S),
            file=sys.stderr, flush=True)
    back_to_back = float(np.mean(cpu[0.0]))
    return {"events_per_call": events, "calls_per_pause": len(cpu[0.0]),
            "cpu_ms_per_call": {_label(p): round(1e3 * float(np.mean(v)), 3)
                                for p, v in cpu.items()},
            "vs_back_to_back": {_label(p): round(float(np.mean(v)) / back_to_back, 2)
                                for p, v in cpu.items()}}


def _label(pause: float) -> str:
    return "back to back" if not pause else f"after {pause * 1e3:g} ms"


def main() -> None:
    """Command line: print the figures (a table, or one JSON line)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=4, help="events per call")
    parser.add_argument("--calls", type=int, default=300, help="calls per pause and round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    result = measure(args.events, args.calls, args.rounds)
    if args.json:
        print(json.dumps(result))
        return
    for label, ms in result["cpu_ms_per_call"].items():
        ratio = result["vs_back_to_back"][label]
        print(f"{label:>14}: {ms:6.2f} ms of CPU per call of {args.events} events ({ratio}x)")


if __name__ == "__main__":
    main()
