"""Search: what people look for, per category, and which searches found nothing they wanted.

A zero-click search is a search whose next event in the same visit is not a
click (another search, a category page, or leaving). Its query is what the
shop's search failed on. A search belongs to the category of the item its
next click opened; a zero-click search has none.

Queries arrive scrubbed (:func:`streams.privacy.scrub_query` runs in
validation), so emails, phone and card numbers are placeholders before
anything is counted or shown.
"""

from __future__ import annotations

from typing import Any

from streams.analysis.topn import TopCounter
from streams.analysis.visits import Visit

TOP_QUERIES = 25
TOP_TERMS = 10
TOP_CATEGORIES = 20
NO_CLICK = "(no click)"


def terms(query: str) -> list[str]:
    """The words of a (scrubbed, lower-case) query worth counting.

    Two letters or more, and no scrubbing placeholder (``<email>``, ``<phone>``...):
    they say only that someone typed personal data.
    """
    return [word for word in query.split(" ") if len(word) > 1 and not word.startswith("<")]


class SearchFigures:
    """Top queries, zero-click queries and top terms per category."""

    def __init__(self) -> None:
        self.searches = 0
        self.zero_click = 0
        self.queries: TopCounter[str] = TopCounter()
        self.zero_click_queries: TopCounter[str] = TopCounter()
        self.category_searches: TopCounter[str] = TopCounter(10_000)
        self.terms: dict[str, TopCounter[str]] = {}

    def add_visit(self, visit: Visit) -> None:
        """Count the searches of one finished visit."""
        events = visit.events
        for i, event in enumerate(events):
            if event.type != "search" or event.query is None:
                continue
            self.searches += 1
            self.queries.add(event.query)
            after = events[i + 1] if i + 1 < len(events) else None
            if after is None or after.type != "click":
                self.zero_click += 1
                self.zero_click_queries.add(event.query)
                category = NO_CLICK
            else:
                category = after.category or NO_CLICK
            self.category_searches.add(category)
            counter = self.terms.get(category)
            if counter is None:
                counter = self.terms[category] = TopCounter(20_000)
            counter.update(terms(event.query))

    def merge(self, other: SearchFigures) -> None:
        """Add the counts of another part of the log (other users)."""
        self.searches += other.searches
        self.zero_click += other.zero_click
        self.queries.merge(other.queries)
        self.zero_click_queries.merge(other.zero_click_queries)
        self.category_searches.merge(other.category_searches)
        for category, counter in other.terms.items():
            self.terms.setdefault(category, TopCounter(20_000)).merge(counter)

    def result(self) -> dict[str, Any]:
        """Search figures as JSON-ready data."""
        categories = [c for c, _ in self.category_searches.top(TOP_CATEGORIES + 1)]
        return {
            "searches": self.searches,
            "zero_click": self.zero_click,
            "zero_click_rate": self.zero_click / self.searches if self.searches else None,
            "top_queries": [{"query": q, "searches": n, "zero_click": self.zero_click_queries[q]}
                            for q, n in self.queries.top(TOP_QUERIES)],
            "top_zero_click_queries": [{"query": q, "searches": self.queries[q],
                                        "zero_click": n}
                                       for q, n in self.zero_click_queries.top(TOP_QUERIES)],
            "terms_by_category": {
                c: {"searches": self.category_searches[c],
                    "terms": [{"term": t, "count": n}
                              for t, n in self.terms[c].top(TOP_TERMS)] if c in self.terms
                    else []}
                for c in categories},
            "exact": self.queries.exact and self.zero_click_queries.exact,
        }
