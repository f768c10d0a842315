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
        previous: str | None = None
        bought: set[str] = set()
        for event in visit.events:
            if event.type == "purchase" and event.item_id is not None:
                bought.add(event.item_id)
            category = event.category
            if category is None:
                continue
            self.category_events[category] += 1
            if previous is not None:
                self.moves.add((previous, category))
            previous = category
        if len(bought) > 1:
            self.baskets += 1
            for pair in combinations(sorted(bought), 2):
                self.pairs.add(pair)

    def result(self) -> dict[str, Any]:
        """The matrix (busiest categories, the rest folded into ``(other)``) and top pairs."""
        names = [c for c, _ in self.category_events.most_common(MATRIX_CATEGORIES)]
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
