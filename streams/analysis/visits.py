"""Cutting each user's events into visits, streaming, with state only for open visits.

A visit is what a shop calls a session: the events of one user with the same
``session_id`` when the producer sends one, else events less than 30 minutes
apart. The analysis never keeps the log: :class:`VisitCutter` holds, per user,
the open visit and a few numbers about the user (first visit, weeks active),
and hands every finished visit to the figures that count it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from streams.contracts import Event

VISIT_GAP_MS = 30 * 60 * 1000
# A visit still open this long after the newest event of the log (by event time) is
# finished: in a time-ordered log its user is gone, and closing it bounds the memory.
IDLE_CLOSE_MS = 6 * 3600 * 1000
SWEEP_EVERY = 100_000  # events between two sweeps for idle visits
# Longer visits are split: a crawler must not grow one visit without bound.
MAX_VISIT_EVENTS = 5_000
WEEK_MS = 7 * 86_400_000


@dataclass(slots=True)
class Visit:
    """One visit's events, oldest first (validated events, queries already scrubbed)."""

    user_id: str
    session_id: str | None
    events: list[Event] = field(default_factory=list)
    gap_before_ms: int | None = None  # end of the user's previous visit to this one's start

    @property
    def start_ms(self) -> int:
        """Event time of the first event."""
        return self.events[0].ts_ms

    @property
    def end_ms(self) -> int:
        """Event time of the last event."""
        return self.events[-1].ts_ms


@dataclass(slots=True)
class Shopper:
    """What the analysis keeps about one user between visits: a few integers."""

    first_ms: int
    weeks: int = 0  # bit k set: active in week k after the first visit
    visits: int = 0
    last_end_ms: int = 0
    open: Visit | None = None


class VisitCutter:
    """Turns a user-ordered stream of events into finished visits.

    ``on_visit`` is called once per finished visit. Events of one user must
    come in time order (as ``shopcast replay`` requires); users may interleave.
    """

    def __init__(self, on_visit: Callable[[Visit], None]) -> None:
        self.on_visit = on_visit
        self.shoppers: dict[str, Shopper] = {}
        self.newest_ms = 0
        self._since_sweep = 0

    def add(self, event: Event) -> None:
        """Add the next event of the log."""
        # Runs for every event of the log: kept to a few dictionary and attribute reads.
        ts = event.ts_ms
        shopper = self.shoppers.get(event.user_id)
        if shopper is None:
            shopper = self.shoppers[event.user_id] = Shopper(first_ms=ts)
        visit = shopper.open
        if visit is None or self._new_visit(visit, event):
            if visit is not None:
                self._finish(shopper, visit)
            visit = shopper.open = Visit(event.user_id, event.session_id, [event])
            if shopper.visits:
                visit.gap_before_ms = max(0, ts - shopper.last_end_ms)
            week = max(0, ts - shopper.first_ms) // WEEK_MS
            shopper.weeks |= 1 << min(week, 62)
        else:
            visit.events.append(event)
        if ts > self.newest_ms:
            self.newest_ms = ts
        self._since_sweep += 1
        if self._since_sweep >= SWEEP_EVERY:
            self._sweep()

    def finish(self) -> None:
        """End of the log: finish every open visit."""
        for shopper in self.shoppers.values():
            if shopper.open is not None:
                self._finish(shopper, shopper.open)

    def users(self) -> Iterator[Shopper]:
        """Everyone seen so far."""
        return iter(self.shoppers.values())

    @staticmethod
    def _new_visit(visit: Visit, event: Event) -> bool:
        events = visit.events
        if len(events) >= MAX_VISIT_EVENTS:
            return True
        if visit.session_id is not None and event.session_id is not None:
            return event.session_id != visit.session_id
        return event.ts_ms - events[-1].ts_ms > VISIT_GAP_MS

    def _finish(self, shopper: Shopper, visit: Visit) -> None:
        shopper.open = None
        shopper.visits += 1
        shopper.last_end_ms = visit.end_ms
        self.on_visit(visit)

    def _sweep(self) -> None:
        self._since_sweep = 0
        limit = self.newest_ms - IDLE_CLOSE_MS
        for shopper in self.shoppers.values():
            if shopper.open is not None and shopper.open.end_ms < limit:
                self._finish(shopper, shopper.open)
