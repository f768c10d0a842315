"""One simulated user, event by event: visits, the funnel inside them, and the time between.

A :class:`Shopper` owns its own random generator, seeded from the master
seed and the user's index, so users can be simulated in any order or in
parallel processes and the log is still the same. :meth:`Shopper.step` draws
the next event from the distributions in :mod:`funnel`; the oracle clones a
shopper (state and a separate generator) to look ahead without disturbing
the real run.
"""

from __future__ import annotations

import math
import random
from typing import NamedTuple

from model_export.simulator import funnel
from model_export.simulator.catalogue import Catalogue
from model_export.simulator.funnel import (
    ADD,
    BROWSE,
    CLICK,
    END,
    PURCHASE,
    SEARCH,
    SessionState,
    StartOption,
)
from model_export.simulator.queries import search_text
from model_export.simulator.users import (
    DAY_MS,
    DRIFT_SD,
    Normals,
    Profile,
    draw_department,
    drift,
    first_session_start,
    make_profile,
    next_session_start,
    taste_probabilities,
)

BROAD_QUERY = 0.15  # share of searches that name only the product noun
SEARCH_SAME_DEPARTMENT = 0.7
BROWSE_SAME_DEPARTMENT = 0.55

# Median seconds before an action, by the action it follows (log-normal around it).
_GAP_S = {
    CLICK: {SEARCH: 9.0, BROWSE: 7.0, CLICK: 28.0, ADD: 20.0, PURCHASE: 25.0},
    ADD: {CLICK: 18.0},
    PURCHASE: {ADD: 75.0, CLICK: 60.0, PURCHASE: 3.0},
    SEARCH: {},
    BROWSE: {},
}
_DEFAULT_GAP_S = {CLICK: 25.0, ADD: 18.0, PURCHASE: 60.0, SEARCH: 20.0, BROWSE: 12.0}
_GAP_SIGMA = 0.8


class Event(NamedTuple):
    """A simulated event before it becomes JSON: indices into the catalogue, -1 when absent."""

    ts: int
    action: int
    item: int
    department: int
    query: str | None
    quantity: int
    session: int


def user_rng(seed: int, user: int, attempt: int = 0) -> random.Random:
    """The generator of one user, derived from the master seed (string seeds hash stably)."""
    return random.Random(f"shopcast:{seed}:{user}:{attempt}")


class Shopper:
    """A user of the simulated shop, drawing their events one at a time."""

    def __init__(self, cat: Catalogue, profile: Profile, state: SessionState,
                 rng: random.Random, end_ms: int, normals: Normals | None = None) -> None:
        self.cat = cat
        self.profile = profile
        self.s = state
        self.rng = rng
        # Taste drift needs a vector of normal draws per visit; seeded from ``rng``.
        self.normals = Normals(rng.getrandbits(64)) if normals is None else normals
        self.end_ms = end_ms
        self.done = False

    @classmethod
    def new(cls, cat: Catalogue, seed: int, user: int, start_ms: int, end_ms: int,
            attempt: int = 0) -> Shopper:
        """A fresh user with traits drawn from their own generator."""
        rng = user_rng(seed, user, attempt)
        profile = make_profile(cat, start_ms, end_ms, rng)
        normals = Normals(rng.getrandbits(64))
        deviation = [DRIFT_SD * z for z in normals.take(cat.n_departments)]
        return cls(cat, profile, SessionState(deviation=deviation), rng, end_ms, normals)

    def clone(self, rng: random.Random, normals: Normals) -> Shopper:
        """A copy that continues from the same state with other generators."""
        return Shopper(self.cat, self.profile, self.s.copy(), rng, self.end_ms, normals)

    def step(self) -> Event | None:
        """The next event, or None once the next visit would start after the log's end."""
        if self.done:
            return None
        s, rng = self.s, self.rng
        if s.in_session:
            action = funnel.choose(funnel.action_weights(s, self.cat), rng)
            if action != END:
                return self._continue(action)
            start = next_session_start(self.profile, s.now, bool(s.cart), rng)
        else:
            start = first_session_start(self.profile, rng)
        if start >= self.end_ms:
            self.done = True
            return None
        begin_session(self, start)
        # Two stages (special starts, then taste), which is start_options() without
        # building every option: the oracle sums the same options.
        specials, rest = funnel.start_plan(s, self.cat)
        r = rng.random()
        for opt in specials:
            r -= opt.p
            if r < 0.0:
                return self._start(opt)
        dep = draw_department(taste_probabilities(self.profile, s.deviation), rng)
        k = funnel.choose(list(funnel.TASTE_START), rng)
        return self._start(funnel.taste_option(self.cat, dep, k, rest))

    # -- drawing events ------------------------------------------------------------------

    def _start(self, opt: StartOption) -> Event:
        s = self.s
        s.intent = opt.department
        ts = s.now
        if opt.action == SEARCH:
            facet = opt.facet if opt.facet is not None else self._facet(opt.department)
            noun = self.cat.item_noun[opt.noun_item] if opt.noun_item >= 0 else None
            return self._search(ts, opt.department, facet, noun)
        if opt.action == BROWSE:
            return self._browse(ts, opt.department)
        assert opt.items is not None
        return self._item_event(ts, CLICK, funnel.draw_item(opt.items, self.rng))

    def _continue(self, action: int) -> Event:
        s, rng, cat = self.s, self.rng, self.cat
        ts = s.now + gap_ms(s.last_action, action, rng)
        if action == SEARCH:
            dep = s.intent if rng.random() < SEARCH_SAME_DEPARTMENT else self._department()
            return self._search(ts, dep, self._facet(dep), None)
        if action == BROWSE:
            dep = s.intent if rng.random() < BROWSE_SAME_DEPARTMENT else self._department()
            return self._browse(ts, dep)
        if action == PURCHASE:
            s.checkout = True
        return self._item_event(ts, action, funnel.draw_item(
            funnel.item_mixture(s, cat, action), rng))

    def _department(self) -> int:
        return draw_department(taste_probabilities(self.profile, self.s.deviation), self.rng)

    def _facet(self, dep: int) -> int:
        """The facet a search asks for: -1 (broad), the habitual one, or a popular one."""
        rng, s = self.rng, self.s
        if rng.random() < BROAD_QUERY:
            return -1
        habit = s.last_facet.get(dep)
        if habit is not None and rng.random() < self.profile.facet_loyalty:
            return habit
        facets = self.cat.department_facets[dep]
        return facets[funnel.choose(self.cat.facet_weights[dep], rng)]

    def _search(self, ts: int, dep: int, facet: int, noun: str | None) -> Event:
        s, cat = self.s, self.cat
        text = search_text(cat, dep, None if facet < 0 else facet, self.rng, noun)
        if facet < 0:
            s.search_pool = cat.department_pool[dep]
            s.buy_again = tuple(sorted(i for i in s.bought if cat.item_department[i] == dep))
        else:
            s.search_pool = cat.facet_pool[facet]
            s.buy_again = tuple(sorted(i for i in s.bought if cat.item_facet[i] == facet))
            s.last_facet[dep] = facet
        s.intent = dep
        return self._record(ts, SEARCH, -1, -1, text, 0)

    def _browse(self, ts: int, dep: int) -> Event:
        self.s.browse_dep = dep
        self.s.intent = dep
        return self._record(ts, BROWSE, -1, dep, None, 0)

    def _item_event(self, ts: int, action: int, item: int) -> Event:
        s, cat, rng = self.s, self.cat, self.rng
        quantity = 0
        if action == CLICK:
            s.last_facet[cat.item_department[item]] = cat.item_facet[item]
        elif action == ADD:
            quantity = 1
            if cat.consumable(item):
                quantity += (rng.random() < 0.3) + (rng.random() < 0.1)
            for entry in s.cart:
                if entry[0] == item:
                    entry[2] += quantity
                    break
            else:
                s.cart.append([item, ts, quantity])
        elif action == PURCHASE:
            quantity = s.cart.pop(0)[2]
            s.checkout = bool(s.cart)
            if cat.consumable(item):
                # It runs out after a while that grows with the amount bought.
                days = rng.lognormvariate(math.log(10.0), 0.35) * quantity ** 0.7
                s.bought[item] = ts + int(days * DAY_MS)
        recent = s.recent
        recent.append(item)
        if len(recent) > 3:
            del recent[0]
        if item not in s.seen:
            s.seen.append(item)
        return self._record(ts, action, item, cat.item_department[item], None, quantity)

    def _record(self, ts: int, action: int, item: int, dep: int, query: str | None,
                quantity: int) -> Event:
        s = self.s
        s.now = ts
        s.last_action = action
        s.n_in_session += 1
        return Event(ts, action, item, dep, query, quantity, s.session_no)


def begin_session(shopper: Shopper, start: int) -> None:
    """Advance a shopper to a visit starting at ``start``: drift taste, forget old carts."""
    s = shopper.s
    if s.session_no > 0:
        s.deviation = drift(s.deviation, start - s.now, shopper.normals, shopper.rng)
    s.now = start
    s.in_session = True
    s.session_no += 1
    s.n_in_session = 0
    s.last_action = END
    s.recent = []
    s.seen = []
    s.browse_dep = -1
    s.search_pool = None
    s.buy_again = ()
    s.checkout = False
    funnel.expire_cart(s)


def start_options(shopper: Shopper) -> list[StartOption]:
    """Every way this shopper's visit (already begun) may start."""
    return funnel.start_options(shopper.s, shopper.cat,
                                taste_probabilities(shopper.profile, shopper.s.deviation))


def gap_ms(previous: int, action: int, rng: random.Random) -> int:
    """Milliseconds between two events of a visit (at least one second)."""
    median = _GAP_S[action].get(previous, _DEFAULT_GAP_S[action])
    return max(1000, int(1000.0 * median * rng.lognormvariate(0.0, _GAP_SIGMA)))
