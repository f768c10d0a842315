"""One streaming pass over an event log that computes every figure of the report.

Big logs are split by user over worker processes: each reads the whole file
but decodes and analyses only its own users (a user's visits never span two
workers), and the parts' counts are added up at the end.
"""

from __future__ import annotations

import os
import time
import zlib
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from streams.analysis.affinity import AffinityFigures
from streams.analysis.funnel import FunnelFigures
from streams.analysis.revenue import RevenueFigures
from streams.analysis.search import SearchFigures
from streams.analysis.sessions import Returns, VisitFigures, cohort_figures, returns_of
from streams.analysis.visits import Visit, VisitCutter
from streams.contracts import Event, decode_event
from streams.eventlog import is_parquet, open_text, read_log

REPORT_VERSION = 1
# Logs are history: any event time up to far in the future is accepted (validation's
# "not after now + 1 day" guards live traffic, not a simulated log of next year).
_FAR_FUTURE_MS = 10 * 365 * 86_400_000
# Below this file size one process is quicker than starting several.
PARALLEL_FROM_BYTES = 8 << 20


def record_values(path: Path, part: int = 0, parts: int = 1) -> Iterator[bytes]:
    """The raw records of a log (JSONL lines as they are, Parquet rows as JSON).

    With ``parts`` > 1, only the records of users whose id hashes to ``part``;
    records without a readable user id go to part 0 (to be counted as rejected).
    """
    if is_parquet(path):
        for record in read_log(path):
            if parts == 1 or _part(record.user_id, parts) == part:
                yield record.value
        return
    with open_text(path) as fh:
        for line in fh:
            line = line.strip()
            if line and (parts == 1 or _part(_user_of(line), parts) == part):
                yield line


def _user_of(line: bytes) -> str | None:
    try:
        user = orjson.loads(line).get("user_id")
    except (orjson.JSONDecodeError, AttributeError):
        return None
    return user if isinstance(user, str) else None


def _part(user_id: str | None, parts: int) -> int:
    # crc32, not hash(): every process must agree on a user's part.
    return 0 if user_id is None else zlib.crc32(user_id.encode("utf-8", "replace")) % parts


@dataclass
class PartialFigures:
    """The figures of one part of the log, before they are added up."""

    funnel: FunnelFigures = field(default_factory=FunnelFigures)
    visits: VisitFigures = field(default_factory=VisitFigures)
    search: SearchFigures = field(default_factory=SearchFigures)
    affinity: AffinityFigures = field(default_factory=AffinityFigures)
    revenue: RevenueFigures = field(default_factory=RevenueFigures)
    rejected: Counter[str] = field(default_factory=Counter)
    returns: list[Returns] = field(default_factory=list)
    events: int = 0
    first_ms: int | None = None
    last_ms: int = 0

    def add_visit(self, visit: Visit) -> None:
        """Hand a finished visit to every figure."""
        self.funnel.add_visit(visit)
        self.visits.add_visit(visit)
        self.search.add_visit(visit)
        self.affinity.add_visit(visit)
        self.revenue.add_visit(visit)

    def merge(self, other: PartialFigures) -> None:
        """Add another part's figures (its users are not in this part)."""
        self.funnel.merge(other.funnel)
        self.visits.merge(other.visits)
        self.search.merge(other.search)
        self.affinity.merge(other.affinity)
        self.revenue.merge(other.revenue)
        self.rejected.update(other.rejected)
        self.returns.extend(other.returns)
        self.events += other.events
        if self.first_ms is None or (other.first_ms is not None
                                     and other.first_ms < self.first_ms):
            self.first_ms = other.first_ms
        self.last_ms = max(self.last_ms, other.last_ms)


def analyze_part(path: Path, part: int = 0, parts: int = 1) -> PartialFigures:
    """The figures of one part of the log (its users whose id hashes to ``part``)."""
    figures = PartialFigures()
    cutter = VisitCutter(figures.add_visit)
    now_ms = int(time.time() * 1000) + _FAR_FUTURE_MS
    first_ms: int | None = None
    for value in record_values(path, part, parts):
        outcome = decode_event(value, now_ms=now_ms)
        if not isinstance(outcome, Event):
            figures.rejected[outcome.reason] += 1
            continue
        figures.events += 1
        if first_ms is None or outcome.ts_ms < first_ms:
            first_ms = outcome.ts_ms
        cutter.add(outcome)
    cutter.finish()
    figures.first_ms, figures.last_ms = first_ms, cutter.newest_ms
    figures.returns = returns_of(cutter.users())
    return figures


def default_workers(path: Path) -> int:
    """Processes worth using for this log: one for small files, else up to 4 cores."""
    if path.stat().st_size < PARALLEL_FROM_BYTES:
        return 1
    return max(1, min(4, os.cpu_count() or 1))


def analyze_log(path: Path | str, workers: int | None = None) -> dict[str, Any]:
    """Every figure of the behaviour report for the log at ``path``, as JSON-ready data.

    Records that break the event contract are counted by reason and skipped.
    Memory grows with the number of users (a few integers each) and open
    visits, never with the number of events. ``workers`` processes split the
    users between them (default: :func:`default_workers`).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"event log {path} does not exist")
    started = time.perf_counter()
    workers = default_workers(path) if workers is None else max(1, workers)
    if workers == 1:
        total = analyze_part(path)
    else:
        with ProcessPoolExecutor(workers) as pool:
            parts = list(pool.map(analyze_part, [path] * workers, range(workers),
                                  [workers] * workers))
        total = parts[0]
        for part in parts[1:]:
            total.merge(part)
    return {
        "version": REPORT_VERSION,
        "log": {
            "path": str(path), "events": total.events,
            "rejected": dict(sorted(total.rejected.items())),
            "users": len(total.returns), "first_ts": total.first_ms,
            "last_ts": total.last_ms or None,
            "seconds": round(time.perf_counter() - started, 2), "workers": workers,
        },
        "funnel": total.funnel.result(),
        "visits": total.visits.result(),
        "returns": cohort_figures(total.returns, total.last_ms),
        "search": total.search.result(),
        "affinity": total.affinity.result(),
        "revenue": total.revenue.result(),
    }
