"""The simulated catalogue: items, their departments and facets, prices, popularity, neighbours.

Everything here is built once from the master seed with numpy and then kept
as plain Python lists, because the per-event sampler runs in pure Python,
where indexing a list is far cheaper than calling into numpy.

Item popularity follows a power law (Zipf over a random ranking), so a few
items take a large share of the traffic. Each item has co-view neighbours
(mostly the same facet, some the same department, a few complements) and
co-purchase neighbours (mostly complementary departments): these are the
item-to-item structure a recommender learns from sessions.
"""

from __future__ import annotations

import bisect
import random
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np

from model_export.simulator.shop_words import DEPARTMENTS, Department

POPULARITY_EXPONENT = 1.05  # Zipf exponent of item popularity
POPULARITY_OFFSET = 3.0  # softens the very top so item 1 is not half of all traffic
COVIEW_NEIGHBOURS = 10
COPURCHASE_NEIGHBOURS = 6


@dataclass(frozen=True)
class Pool:
    """A small discrete distribution over item indices, sampled with one bisect."""

    items: tuple[int, ...]
    cum: tuple[float, ...]  # cumulative probabilities, the last exactly 1.0

    @classmethod
    def from_weights(cls, items: np.ndarray | list[int], weights: np.ndarray | list[float]
                     ) -> Pool:
        """A pool with probabilities proportional to ``weights``."""
        w = np.asarray(weights, dtype=np.float64)
        cum = np.cumsum(w / w.sum())
        cum[-1] = 1.0
        return cls(tuple(int(i) for i in items), tuple(float(c) for c in cum))

    def sample(self, rng: random.Random) -> int:
        """One item index drawn from the pool."""
        return self.items[bisect.bisect_right(self.cum, rng.random())]

    @cached_property
    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """The pool as (item indices, probabilities), for the oracle (computed once)."""
        cum = np.asarray(self.cum)
        return np.asarray(self.items, dtype=np.int64), np.diff(cum, prepend=0.0)

    def __len__(self) -> int:
        """Number of items in the pool."""
        return len(self.items)


@dataclass
class Catalogue:
    """All items of the simulated shop and the precomputed structure the sampler uses."""

    departments: list[Department]
    item_ids: list[str]
    item_department: list[int]
    item_facet: list[int]  # index into ``facets``
    item_noun: list[str]
    item_modifier: list[str]
    prices: list[float]
    popularity: np.ndarray  # normalised, sums to 1
    facets: list[tuple[int, str]]  # (department, facet word) of each facet pool
    department_facets: list[list[int]]  # facet pools of each department, non-empty ones only
    facet_weights: list[list[float]]  # how often each of a department's facets is wanted
    department_weight: np.ndarray  # share of popularity per department
    popular: Pool = field(repr=False, default=None)  # type: ignore[assignment]
    department_pool: list[Pool] = field(repr=False, default_factory=list)
    facet_pool: list[Pool] = field(repr=False, default_factory=list)
    coview: list[Pool] = field(repr=False, default_factory=list)
    copurchase: list[Pool] = field(repr=False, default_factory=list)

    @property
    def n_items(self) -> int:
        """Number of items."""
        return len(self.item_ids)

    @property
    def n_departments(self) -> int:
        """Number of departments (categories) in use."""
        return len(self.departments)

    def category_of(self, item: int) -> str:
        """The category name of an item, as it appears on events."""
        return self.departments[self.item_department[item]].name

    def consumable(self, item: int) -> bool:
        """Whether people buy this item again when it runs out."""
        return self.departments[self.item_department[item]].consumable


def build_catalogue(n_items: int, seed: int) -> Catalogue:
    """Build a catalogue of ``n_items`` items, deterministically from ``seed``."""
    if n_items < 1:
        raise ValueError(f"a shop needs at least one item, got {n_items}")
    rng = np.random.default_rng([seed, 0xCA7A])
    # Small catalogues use fewer departments so every department has several items.
    n_dep = max(1, min(len(DEPARTMENTS), n_items // 8))
    departments = list(DEPARTMENTS[:n_dep])
    dep_share = 1.0 / np.arange(1, n_dep + 1) ** 0.6
    dep_share = dep_share[rng.permutation(n_dep)]
    dep_share /= dep_share.sum()
    # Every department gets at least two items; the rest follow the shares.
    base = min(2, n_items // n_dep)
    item_dep = np.concatenate([np.repeat(np.arange(n_dep), base),
                               rng.choice(n_dep, size=n_items - base * n_dep, p=dep_share)])
    rng.shuffle(item_dep)

    facets: list[tuple[int, str]] = []
    facet_index: dict[tuple[int, str], int] = {}
    item_facet = np.zeros(n_items, dtype=np.int64)
    nouns: list[str] = []
    modifiers: list[str] = []
    for i, d in enumerate(item_dep):
        dep = departments[d]
        word = dep.facets[rng.integers(len(dep.facets))]
        key = (int(d), word)
        if key not in facet_index:
            facet_index[key] = len(facets)
            facets.append(key)
        item_facet[i] = facet_index[key]
        nouns.append(dep.nouns[rng.integers(len(dep.nouns))])
        modifiers.append(dep.modifiers[rng.integers(len(dep.modifiers))])

    ranks = rng.permutation(n_items)
    pop = 1.0 / (ranks + POPULARITY_OFFSET) ** POPULARITY_EXPONENT
    pop /= pop.sum()
    medians = np.array([departments[d].price for d in item_dep])
    prices = np.maximum(0.99, np.round(medians * rng.lognormal(0.0, 0.45, n_items)) - 0.01)
    # Item ids are shuffled numbers, so an id says nothing about the item.
    numbers = rng.permutation(n_items) + 1

    cat = Catalogue(
        departments=departments,
        item_ids=[f"sku-{n}" for n in numbers],
        item_department=[int(d) for d in item_dep],
        item_facet=[int(f) for f in item_facet],
        item_noun=nouns,
        item_modifier=modifiers,
        prices=[round(float(p), 2) for p in prices],
        popularity=pop,
        facets=facets,
        department_facets=[[] for _ in range(n_dep)],
        facet_weights=[[] for _ in range(n_dep)],
        department_weight=np.bincount(item_dep, weights=pop, minlength=n_dep),
    )
    _build_pools(cat, rng)
    return cat


def _build_pools(cat: Catalogue, rng: np.random.Generator) -> None:
    pop = cat.popularity
    item_dep = np.asarray(cat.item_department)
    item_facet = np.asarray(cat.item_facet)
    cat.popular = Pool.from_weights(np.arange(cat.n_items), pop)
    dep_members = [np.flatnonzero(item_dep == d) for d in range(cat.n_departments)]
    facet_members = [np.flatnonzero(item_facet == f) for f in range(len(cat.facets))]
    cat.department_pool = [Pool.from_weights(m, pop[m]) for m in dep_members]
    cat.facet_pool = [Pool.from_weights(m, pop[m]) for m in facet_members]
    for f, (d, _) in enumerate(cat.facets):
        cat.department_facets[d].append(f)
    for d, fs in enumerate(cat.department_facets):
        # Shoppers ask for popular facets more often, but not only for them.
        w = np.array([pop[facet_members[f]].sum() for f in fs]) ** 0.5
        cat.facet_weights[d] = list(w / w.sum())

    by_name = {dep.name: d for d, dep in enumerate(cat.departments)}
    complement_members = []
    for dep in cat.departments:
        ids = [by_name[c] for c in dep.complements if c in by_name]
        complement_members.append(np.concatenate([dep_members[c] for c in ids])
                                  if ids else np.zeros(0, dtype=np.int64))

    log_pop = np.log(pop)

    def pick(members: np.ndarray, k: int, exclude: set[int]) -> list[int]:
        """Up to ``k`` members without replacement, proportional to popularity.

        Gumbel top-k: the same law as drawing one by one, in one vectorised step.
        """
        if k <= 0 or len(members) == 0:
            return []
        keys = log_pop[members] + rng.gumbel(size=len(members))
        for e in exclude:
            keys[members == e] = -np.inf
        k = min(k, int(np.isfinite(keys).sum()))
        if k == 0:
            return []
        top = np.argpartition(-keys, k - 1)[:k]
        top = top[np.argsort(-keys[top], kind="stable")]
        return [int(x) for x in members[top]]

    rank_weight = 1.0 / np.arange(1, 64) ** 0.8
    for i in range(cat.n_items):
        d, f = item_dep[i], item_facet[i]
        same_facet = pick(facet_members[f], 6, {i})
        same_dep = pick(dep_members[d], COVIEW_NEIGHBOURS - 1 - len(same_facet),
                        {i, *same_facet})
        compl = pick(complement_members[d], 1, set())
        neighbours = same_facet[:3] + same_dep[:2] + compl + same_facet[3:] + same_dep[2:]
        if not neighbours:
            neighbours = [i]
        cat.coview.append(Pool.from_weights(neighbours, rank_weight[:len(neighbours)]))
        buy_with = pick(complement_members[d], 4, set())
        buy_with += pick(dep_members[d], COPURCHASE_NEIGHBOURS - len(buy_with), {i, *buy_with})
        if not buy_with:
            buy_with = [i]
        cat.copurchase.append(Pool.from_weights(buy_with, rank_weight[:len(buy_with)]))
