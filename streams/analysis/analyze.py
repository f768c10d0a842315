"""One streaming pass over an event log that computes every figure of the report."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from streams.analysis.affinity import AffinityFigures
from streams.analysis.funnel import FunnelFigures
from streams.analysis.revenue import RevenueFigures
from streams.analysis.search import SearchFigures
from streams.analysis.sessions import VisitFigures, cohort_figures
from streams.analysis.visits import Visit, VisitCutter
from streams.contracts import Event, decode_event
from streams.eventlog import is_parquet, open_text, read_log

REPORT_VERSION = 1
# Logs are history: any event time up to far in the future is accepted (validation's
# "not after now + 1 day" guards live traffic, not a simulated log of next year).
_FAR_FUTURE_MS = 10 * 365 * 86_400_000


def record_values(path: Path) -> Iterator[bytes]:
    """The raw records of a log: JSONL lines as they are, Parquet rows as JSON."""
    if is_parquet(path):
        for record in read_log(path):
            yield record.value
        return
    with open_text(path) as fh:
        for line in fh:
            line = line.strip()
            if line:
                yield line


def analyze_log(path: Path | str) -> dict[str, Any]:
    """Every figure of the behaviour report for the log at ``path``, as JSON-ready data.

    Records that break the event contract are counted by reason and skipped.
    Memory grows with the number of users (a few integers each) and open
    visits, never with the number of events.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"event log {path} does not exist")
    started = time.perf_counter()
    funnel, visits, search = FunnelFigures(), VisitFigures(), SearchFigures()
    affinity, revenue = AffinityFigures(), RevenueFigures()
    figures = (funnel, visits, search, affinity, revenue)

    def on_visit(visit: Visit) -> None:
        for figure in figures:
            figure.add_visit(visit)

    cutter = VisitCutter(on_visit)
    rejected: Counter[str] = Counter()
    now_ms = int(time.time() * 1000) + _FAR_FUTURE_MS
    first_ms: int | None = None
    events = 0
    for value in record_values(path):
        outcome = decode_event(value, now_ms=now_ms)
        if not isinstance(outcome, Event):
            rejected[outcome.reason] += 1
            continue
        events += 1
        if first_ms is None or outcome.ts_ms < first_ms:
            first_ms = outcome.ts_ms
        cutter.add(outcome)
    cutter.finish()
    return {
        "version": REPORT_VERSION,
        "log": {
            "path": str(path), "events": events, "rejected": dict(sorted(rejected.items())),
            "users": len(cutter.shoppers), "first_ts": first_ms,
            "last_ts": cutter.newest_ms or None,
            "seconds": round(time.perf_counter() - started, 2),
        },
        "funnel": funnel.result(),
        "visits": visits.result(),
        "returns": cohort_figures(cutter.users(), cutter.newest_ms),
        "search": search.result(),
        "affinity": affinity.result(),
        "revenue": revenue.result(),
    }
