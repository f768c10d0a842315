"""The purchase funnel: how far visits get, step by step, overall and by category.

Steps are browse → click → add_to_cart → purchase. Every visit browses (a
category page, a search or an item page are all looking around the shop);
a visit reaches a later step when it has that step's event after reaching
the one before (an ordered funnel: a purchase of an item carted in an earlier
visit, without an add_to_cart in this one, stops the visit at click).
Conversion of a step is the share of visits at the step before that reach
it; drop-off is the rest.

Beside it, :attr:`FunnelFigures.moves` counts what a visit's next event is
after each action (or that the visit ends): the rates a shop simulator is
configured with, measured.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from streams.analysis.visits import Visit
from streams.contracts import ACTIONS

STEPS: tuple[str, ...] = ("browse", "click", "add_to_cart", "purchase")
_STEP = {"click": 1, "add_to_cart": 2, "purchase": 3}
LEAVE = "leave"
TOP_CATEGORIES = 20


def furthest_step(actions: list[str]) -> int:
    """Index in :data:`STEPS` of the furthest step a visit's actions reach, in order."""
    reached = 0
    for action in actions:
        step = _STEP.get(action)
        if step is not None and step == reached + 1:
            reached = step
            if reached == len(STEPS) - 1:
                break
    return reached


def step_table(reached: list[int]) -> dict[str, Any]:
    """Visits, conversion and drop-off per step from visits reaching each step."""
    visits = {step: reached[i] for i, step in enumerate(STEPS)}
    conversion: dict[str, float | None] = {}
    for i, step in enumerate(STEPS[1:], start=1):
        before = reached[i - 1]
        conversion[step] = reached[i] / before if before else None
    return {
        "visits": visits,
        "conversion": conversion,
        "drop_off": {s: None if c is None else 1.0 - c for s, c in conversion.items()},
        "visit_to_purchase": reached[-1] / reached[0] if reached[0] else None,
    }


class FunnelFigures:
    """Counts visits per funnel step (overall and per category) and next-step rates."""

    def __init__(self) -> None:
        self.reached = [0] * len(STEPS)
        self.by_category: dict[str, list[int]] = {}
        self.moves: Counter[tuple[str, str]] = Counter()  # (action, next action or leave)

    def add_visit(self, visit: Visit) -> None:
        """Count one finished visit."""
        actions = [e.type for e in visit.events]
        for i in range(furthest_step(actions) + 1):
            self.reached[i] += 1
        # Per category: the same ordered funnel over the visit's events of that category.
        per_category: dict[str, list[str]] = {}
        for event in visit.events:
            if event.category is not None:
                per_category.setdefault(event.category, []).append(event.type)
        for category, cat_actions in per_category.items():
            counts = self.by_category.setdefault(category, [0] * len(STEPS))
            for i in range(furthest_step(cat_actions) + 1):
                counts[i] += 1
        # Counter.update over pairs counts in C: this runs for every event of the log.
        self.moves.update(zip(actions, actions[1:], strict=False))
        self.moves[actions[-1], LEAVE] += 1

    def merge(self, other: FunnelFigures) -> None:
        """Add the counts of another part of the log (other users)."""
        self.reached = [a + b for a, b in zip(self.reached, other.reached, strict=True)]
        for category, counts in other.by_category.items():
            mine = self.by_category.setdefault(category, [0] * len(STEPS))
            mine[:] = [a + b for a, b in zip(mine, counts, strict=True)]
        self.moves.update(other.moves)

    def result(self) -> dict[str, Any]:
        """The funnel figures as JSON-ready data."""
        busiest = sorted(self.by_category.items(), key=lambda kv: (-kv[1][0], kv[0]))
        next_steps = {}
        for action in ACTIONS:
            counts = {n: self.moves[action, n] for n in (*ACTIONS, LEAVE)}
            total = sum(counts.values())
            next_steps[action] = {
                "events": total,
                "next": {n: c / total if total else None for n, c in counts.items()},
            }
        return {
            "steps": list(STEPS),
            "overall": step_table(self.reached),
            "by_category": {c: step_table(r) for c, r in busiest[:TOP_CATEGORIES]},
            "categories_total": len(self.by_category),
            "next_step": next_steps,
        }
