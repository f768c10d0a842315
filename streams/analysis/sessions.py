"""Visits and returns: how long visits last, how often they bounce, when users come back.

Distributions are kept as exact histograms of whole numbers (events per
visit, seconds, minutes), so medians are exact and memory stays bounded by
the range of values, not the number of visits.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any, NamedTuple

from streams.analysis.visits import WEEK_MS, Shopper, Visit

COHORT_WEEKS = 8  # retention columns: weeks 1..8 after the first visit


class Returns(NamedTuple):
    """What cohorts need of one user: first visit, weeks active (bit k: week k), visits."""

    first_ms: int
    weeks: int
    visits: int


def returns_of(shoppers: Iterable[Shopper]) -> list[Returns]:
    """The compact per-user rows a part of the log hands over for the cohort figures."""
    return [Returns(s.first_ms, s.weeks, s.visits) for s in shoppers]


def quantile(histogram: Counter[int], q: float) -> float | None:
    """The ``q``-quantile (lower value) of a histogram ``value -> count``."""
    total = sum(histogram.values())
    if not total:
        return None
    rank = q * (total - 1)
    seen = 0
    for value in sorted(histogram):
        seen += histogram[value]
        if seen > rank:
            return float(value)
    return float(max(histogram))


def summary(histogram: Counter[int]) -> dict[str, float | None]:
    """Mean, median, 90th percentile and maximum of a histogram."""
    total = sum(histogram.values())
    mean = sum(v * n for v, n in histogram.items()) / total if total else None
    return {"mean": mean, "median": quantile(histogram, 0.5), "p90": quantile(histogram, 0.9),
            "max": float(max(histogram)) if histogram else None}


class VisitFigures:
    """Events per visit, visit duration, bounces and the time between a user's visits."""

    def __init__(self) -> None:
        self.events = Counter[int]()
        self.seconds = Counter[int]()
        self.gap_minutes = Counter[int]()
        self.visits = 0

    def add_visit(self, visit: Visit) -> None:
        """Count one finished visit."""
        self.visits += 1
        self.events[len(visit.events)] += 1
        self.seconds[(visit.end_ms - visit.start_ms) // 1000] += 1
        if visit.gap_before_ms is not None:
            self.gap_minutes[visit.gap_before_ms // 60_000] += 1

    def merge(self, other: VisitFigures) -> None:
        """Add the counts of another part of the log (other users)."""
        self.events.update(other.events)
        self.seconds.update(other.seconds)
        self.gap_minutes.update(other.gap_minutes)
        self.visits += other.visits

    def result(self) -> dict[str, Any]:
        """Visit figures as JSON-ready data."""
        bounces = self.events.get(1, 0)
        return {
            "visits": self.visits,
            "bounce_rate": bounces / self.visits if self.visits else None,
            "events_per_visit": summary(self.events),
            "duration_seconds": summary(self.seconds),
            "hours_between_visits": {k: None if v is None else v / 60.0
                                     for k, v in summary(self.gap_minutes).items()},
            "events_histogram": {str(k): self.events[k] for k in sorted(self.events)},
        }


def iso_week(ts_ms: int) -> str:
    """The ISO week (``2026-W07``) of an event time, in UTC."""
    year, week, _ = datetime.fromtimestamp(ts_ms / 1000, tz=UTC).isocalendar()
    return f"{year}-W{week:02d}"


def cohort_figures(shoppers: Iterable[Shopper | Returns], last_ms: int) -> dict[str, Any]:
    """Return rates by cohort (the ISO week of a user's first visit in the log).

    ``shoppers`` are the analysis's per-user records (or their :class:`Returns`).

    ``returned`` is the share of a cohort with a second visit; ``week_k`` the
    share active again in week ``k`` after their first visit (weeks counted
    from the first visit, not the calendar), among users whose first visit is
    at least ``k`` weeks before the log's end (later ones could not have
    returned yet). Users of the log's first week may have visited before it.
    """
    cohorts: dict[str, dict[str, Any]] = {}
    users = returning = 0
    for shopper in shoppers:
        users += 1
        returning += shopper.visits > 1
        row = cohorts.setdefault(iso_week(shopper.first_ms), {
            "users": 0, "returned": 0, "active": [0] * COHORT_WEEKS,
            "observable": [0] * COHORT_WEEKS})
        row["users"] += 1
        row["returned"] += shopper.visits > 1
        for k in range(1, COHORT_WEEKS + 1):
            if shopper.first_ms + (k + 1) * WEEK_MS <= last_ms:
                row["observable"][k - 1] += 1
                row["active"][k - 1] += bool(shopper.weeks >> k & 1)
    table = []
    for week in sorted(cohorts):
        row = cohorts[week]
        table.append({
            "week": week,
            "users": row["users"],
            "returned": row["returned"] / row["users"],
            "retention": [a / o if o else None
                          for a, o in zip(row["active"], row["observable"], strict=True)],
        })
    return {"users": users, "return_rate": returning / users if users else None,
            "cohorts": table}
