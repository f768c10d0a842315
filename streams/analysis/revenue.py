"""Revenue, where purchase events carry a price: price × quantity (1 when absent)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from streams.analysis.visits import Visit

TOP_CATEGORIES = 20


class RevenueFigures:
    """Revenue overall, per order (a visit with a priced purchase), per category and per day."""

    def __init__(self) -> None:
        self.total = 0.0
        self.orders = 0
        self.purchases = 0
        self.unpriced = 0
        self.by_category: dict[str, float] = {}
        self.by_day: dict[str, float] = {}

    def add_visit(self, visit: Visit) -> None:
        """Add the purchases of one finished visit."""
        order = 0.0
        priced = False
        for event in visit.events:
            if event.type != "purchase":
                continue
            self.purchases += 1
            if event.price is None:
                self.unpriced += 1
                continue
            amount = event.price * (event.quantity or 1)
            priced = True
            order += amount
            _add(self.by_category, event.category or "(none)", amount)
            _add(self.by_day, datetime.fromtimestamp(event.ts_ms / 1000, tz=UTC).date()
                 .isoformat(), amount)
        if priced:
            self.orders += 1
            self.total += order

    def merge(self, other: RevenueFigures) -> None:
        """Add the purchases of another part of the log (other users)."""
        self.total += other.total
        self.orders += other.orders
        self.purchases += other.purchases
        self.unpriced += other.unpriced
        for key, amount in other.by_category.items():
            _add(self.by_category, key, amount)
        for key, amount in other.by_day.items():
            _add(self.by_day, key, amount)

    def result(self) -> dict[str, Any] | None:
        """Revenue figures, or None when no purchase has a price."""
        if not self.orders:
            return None
        return {
            "total": round(self.total, 2),
            "orders": self.orders,
            "average_order_value": round(self.total / self.orders, 2),
            "purchases": self.purchases,
            "purchases_without_price": self.unpriced,
            "by_category": {c: round(v, 2) for c, v in sorted(
                self.by_category.items(), key=lambda kv: (-kv[1], kv[0]))[:TOP_CATEGORIES]},
            "by_day": {d: round(self.by_day[d], 2) for d in sorted(self.by_day)},
        }


def _add(totals: dict[str, float], key: str, amount: float) -> None:
    totals[key] = totals.get(key, 0.0) + amount
