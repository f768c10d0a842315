"""The oracle: what the simulator itself knew just before it drew an event.

Evaluation scores the oracle exactly like a model, so it shows the best any
model could do on a simulated log. For the last two events of every user
(the test event and the validation event of a time split), the oracle file
holds one JSON object per event, one per line, ordered by user index and
then by time::

    {"user_id": "u-12", "event_id": "ev-7-12-83", "ts": 1793400000000,
     "next_action": {"browse": 0.04, "search": 0.06, "click": 0.61,
                     "add_to_cart": 0.12, "purchase": 0.17},
     "next_items": [{"item_id": "sku-41", "p": 0.31}, ...],   # up to 100, best first
     "purchase_probability": 0.42,
     "horizon_seconds": 86400}

Let event ``k`` be the event named by ``event_id`` and ``t = k - 1`` the
user's event just before it (the last event of the history a model sees).
Everything is conditioned on the simulator's full state right after event
``t`` and on event ``k`` existing (the log ends at a fixed time, so a visit
that would start after it is never drawn):

* ``next_action`` -- the probability of each type for event ``k``.
* ``next_items`` -- the distribution event ``k``'s item was drawn from,
  given that event ``k`` has an item (a click, add_to_cart or purchase),
  truncated to the 100 likeliest items; the probabilities of all items sum
  to one, so the listed ones sum to at most one.
* ``purchase_probability`` -- P(the user has a purchase event with ``ts`` in
  ``(ts_t, ts_t + 86400 s]``), the same label evaluation computes from the
  log at position ``t``. Events after the log's end do not count, exactly as
  they are absent from the log.

Within a visit these are exact sums over the funnel's distributions. When
the visit may end before event ``k``, the start of the next visit (its time,
the taste drift until then) is integrated by Monte Carlo, and the purchase
probability is a Monte Carlo estimate over rollouts of copies of the user's
state (``rollouts`` of them; the standard error is at most 0.5/sqrt(rollouts)).
The look-ahead uses its own generators, seeded from the master seed, the
user and the event, so the oracle file is as deterministic as the log.
Probabilities are rounded down to 7 decimals.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson

from model_export.simulator import funnel
from model_export.simulator.catalogue import Catalogue
from model_export.simulator.funnel import END, ITEM_ACTIONS, POINT, POOL, PURCHASE, Mixture
from model_export.simulator.shopper import Shopper, begin_session
from model_export.simulator.users import Normals, next_session_start, taste_probabilities
from streams.contracts import ACTIONS

HORIZON_MS = 86_400_000
TOP_ITEMS = 100
DEFAULT_ROLLOUTS = 128
START_SAMPLES = 48  # Monte Carlo draws of the next visit's start
MAX_START_TRIES = 256


@dataclass(frozen=True)
class OraclePrediction:
    """The oracle's view of one event: action, item and purchase probabilities."""

    next_action: list[float]  # in the order of ACTIONS
    items: np.ndarray  # probability of every catalogue item, sums to 1 (or all zero)
    purchase_probability: float


class _Accumulator:
    """Sums weighted mixtures by component first and densifies once, which keeps it cheap."""

    def __init__(self, cat: Catalogue) -> None:
        self.cat = cat
        self.points: dict[int, float] = {}
        self.pools: dict[int, tuple[Any, float]] = {}

    def add(self, mix: Mixture, scale: float) -> None:
        total = sum(w for w, _, _ in mix)
        if scale <= 0.0 or total <= 0.0:
            return
        for w, kind, payload in mix:
            share = scale * w / total
            if kind == POINT:
                self.points[payload] = self.points.get(payload, 0.0) + share  # type: ignore[index,call-overload]
            elif kind == POOL:
                key = id(payload)
                old = self.pools.get(key, (payload, 0.0))[1]
                self.pools[key] = (payload, old + share)
            else:
                items: tuple[int, ...] = payload  # type: ignore[assignment]
                for i in items:
                    self.points[i] = self.points.get(i, 0.0) + share / len(items)

    def merge(self, other: _Accumulator, scale: float) -> None:
        for key, (pool, w) in other.pools.items():
            old = self.pools.get(key, (pool, 0.0))[1]
            self.pools[key] = (pool, old + scale * w)
        for item, w in other.points.items():
            self.points[item] = self.points.get(item, 0.0) + scale * w

    def dense(self) -> np.ndarray:
        vec = np.zeros(self.cat.n_items, dtype=np.float64)
        for pool, weight in self.pools.values():
            items, probs = pool.arrays
            vec[items] += weight * probs
        for item, weight in self.points.items():
            vec[item] += weight
        return vec


def predict(shopper: Shopper, rng: random.Random, rollouts: int = DEFAULT_ROLLOUTS
            ) -> OraclePrediction:
    """The oracle for the event ``shopper`` is about to draw (its state is left untouched)."""
    cat, s = shopper.cat, shopper.s
    normals = Normals(rng.getrandbits(64))
    weights = funnel.action_weights(s, cat)
    acc = _Accumulator(cat)
    for action in ITEM_ACTIONS:
        if weights[action] > 0.0:
            acc.add(funnel.item_mixture(s, cat, action), weights[action])
    p_item = sum(weights[a] for a in ITEM_ACTIONS)

    p_end = weights[END]
    end_weight = 0.0
    start = _NextVisit(cat)
    if p_end > 0.0:
        start = _next_visit(shopper, rng, normals)
        end_weight = p_end * start.exists
        acc.merge(start.items, end_weight)
    denominator = (1.0 - p_end) + end_weight
    next_action = [(weights[a] + end_weight * start.actions[a]) / denominator
                   for a in range(len(ACTIONS))]
    items = acc.dense()
    mass = p_item + end_weight * sum(start.actions[a] for a in ITEM_ACTIONS)
    if mass > 0.0:
        items /= mass
    return OraclePrediction(next_action, items,
                            purchase_within(shopper, rng, normals, rollouts, HORIZON_MS))


class _NextVisit:
    """How the next visit begins, averaged over when it starts and how taste drifts until then.

    ``actions`` are the first event's action probabilities, ``items`` the
    first item's distribution times P(the first event has an item), and
    ``exists`` the probability that the visit starts before the log ends.
    """

    def __init__(self, cat: Catalogue) -> None:
        self.actions = [0.0] * len(ACTIONS)
        self.items = _Accumulator(cat)
        self.taste = [0.0] * cat.n_departments  # sum of rest * taste over samples
        self.samples = 0
        self.exists = 0.0

    def add(self, look: Shopper) -> None:
        specials, rest = funnel.start_plan(look.s, look.cat)
        for opt in specials:
            self.actions[opt.action] += opt.p
            if opt.items is not None:
                self.items.add(opt.items, opt.p)
        for k, share in enumerate(funnel.TASTE_START):
            self.actions[funnel.TASTE_START_ACTIONS[k]] += rest * share
        taste = taste_probabilities(look.profile, look.s.deviation)
        self.taste = [t + rest * p for t, p in zip(self.taste, taste, strict=True)]
        self.samples += 1

    def finish(self, cat: Catalogue) -> None:
        """Turn the sums into averages (taste-driven landing clicks are added here, once)."""
        n = self.samples
        click = funnel.TASTE_START_ACTIONS.index(funnel.CLICK)
        for dep, weight in enumerate(self.taste):
            if weight > 0.0:
                opt = funnel.taste_option(cat, dep, click, weight * funnel.TASTE_START[click])
                assert opt.items is not None
                self.items.add(opt.items, opt.p)
        self.actions = [a / n for a in self.actions]
        scaled = _Accumulator(cat)
        scaled.merge(self.items, 1.0 / n)
        self.items = scaled


def _next_visit(shopper: Shopper, rng: random.Random, normals: Normals) -> _NextVisit:
    """Monte Carlo over the next visit's start, conditioned on it being inside the log."""
    inside, outside = _NextVisit(shopper.cat), _NextVisit(shopper.cat)
    tries = 0
    while inside.samples < START_SAMPLES and tries < MAX_START_TRIES:
        tries += 1
        look = shopper.clone(rng, normals)
        start = next_session_start(look.profile, look.s.now, bool(look.s.cart), rng)
        target = inside if start < shopper.end_ms else outside
        if target is outside and outside.samples >= START_SAMPLES:
            continue
        begin_session(look, start)
        target.add(look)
    if inside.samples:
        inside.exists = inside.samples / tries
        inside.finish(shopper.cat)
        return inside
    # Every drawn visit fell after the log's end, yet the event exists: keep the shape of a
    # visit's start and give it the smallest plausible weight.
    outside.exists = 0.5 / (tries + 1)
    outside.finish(shopper.cat)
    return outside


def purchase_within(shopper: Shopper, rng: random.Random, normals: Normals,
                    rollouts: int, horizon_ms: int) -> float:
    """Share of rollouts from the shopper's state with a purchase in (now, now + horizon]."""
    limit = shopper.s.now + horizon_ms
    hits = 0
    for _ in range(rollouts):
        look = shopper.clone(rng, normals)
        # A visit starting after the horizon cannot count: do not draw it at all.
        look.end_ms = min(look.end_ms, limit + 1)
        while True:
            ev = look.step()
            if ev is None or ev.ts > limit:
                break
            if ev.action == PURCHASE:
                hits += 1
                break
    return hits / rollouts


def oracle_rng(seed: int, user: int, position: int) -> random.Random:
    """The look-ahead generator for one oracle event, independent of the log's generators."""
    return random.Random(f"shopcast-oracle:{seed}:{user}:{position}")


def _floor7(p: float) -> float:
    return math.floor(p * 1e7) / 1e7


def oracle_record(cat: Catalogue, user_id: str, event_id: str, ts: int,
                  pred: OraclePrediction, top: int = TOP_ITEMS) -> dict[str, Any]:
    """One line of the oracle file (see the module docstring)."""
    order = np.argsort(-pred.items, kind="stable")[:top]
    next_items = [{"item_id": cat.item_ids[i], "p": _floor7(float(pred.items[i]))}
                  for i in order if pred.items[i] > 0.0]
    return {
        "user_id": user_id,
        "event_id": event_id,
        "ts": ts,
        "next_action": {name: _floor7(p) for name, p in zip(ACTIONS, pred.next_action,
                                                             strict=True)},
        "next_items": next_items,
        "purchase_probability": _floor7(pred.purchase_probability),
        "horizon_seconds": HORIZON_MS // 1000,
    }


def oracle_line(record: dict[str, Any]) -> bytes:
    """An oracle record as one JSON line."""
    return orjson.dumps(record, option=orjson.OPT_APPEND_NEWLINE)
