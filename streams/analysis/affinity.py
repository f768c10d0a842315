"""What goes with what: moves between categories, and items bought together.

A move is two consecutive events of a visit that both have a category (a
search has none and is skipped over): ``from`` is the first one's category,
``to`` the second's. Staying in a category counts too, on the diagonal.
Items bought together are distinct items purchased in the same visit.
"""

from __future__ import annotations

from collections import Counter
from itertools import combinations
from typing import Any

from streams.analysis.topn import TopCounter
from streams.analysis.visits import Visit

MATRIX_CATEGORIES = 15
OTHER = "(other)"
TOP_PAIRS = 20


class AffinityFigures:
    """The category move matrix and the pairs of items most often bought together."""

    def __init__(self) -> None:
        self.moves: TopCounter[tuple[str, str]] = TopCounter(500_000)
        self.category_events: Counter[str] = Counter()
        self.pairs: TopCounter[tuple[str, str]] = TopCounter()
        self.baskets = 0  # visits with at least two distinct items bought

    def add_visit(self, visit: Visit) -> None:
        """Count the moves and the basket of one finished visit."""
        categories = [e.category for e in visit.events if e.category is not None]
        bought = {e.item_id for e in visit.events if e.type == "purchase" and e.item_id}
        self.category_events.update(categories)
        if len(categories) > 1:
            self.moves.update(zip(categories, categories[1:], strict=False))
        if len(bought) > 1:
            self.baskets += 1
            self.pairs.update(combinations(sorted(bought), 2))

    def merge(self, other: AffinityFigures) -> None:
        """Add the counts of another part of the log (other users)."""
        self.moves.merge(other.moves)
        self.category_events.update(other.category_events)
        self.pairs.merge(other.pairs)
        self.baskets += other.baskets

    def result(self) -> dict[str, Any]:
        """The matrix (busiest categories, the rest folded into ``(other)``) and top pairs."""
        busiest = sorted(self.category_events.items(), key=lambda kv: (-kv[1], kv[0]))
        names = [c for c, _ in busiest[:MATRIX_CATEGORIES]]
        if len(self.category_events) > len(names):
            names.append(OTHER)
        index = {c: i for i, c in enumerate(names)}
        other = index.get(OTHER)
        matrix = [[0] * len(names) for _ in names]
        for (a, b), n in self.moves.counts.items():
            i, j = index.get(a, other), index.get(b, other)
            if i is not None and j is not None:
                matrix[i][j] += n
        return {
            "categories": names,
            "moves": matrix,
            "bought_together": [{"items": list(pair), "visits": n}
                                for pair, n in self.pairs.top(TOP_PAIRS)],
            "baskets": self.baskets,
        }
