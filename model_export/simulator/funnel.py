"""What a shopper does next inside a visit: the funnel, as explicit distributions.

The process is written as functions that return *distributions* rather than
samples: :func:`action_weights` (the next action, or the end of the visit),
:func:`item_mixture` (the next item for an action that has one) and
:func:`start_options` (how a new visit begins). The sampler draws from them
and the oracle sums them, so the two cannot disagree.

The next item depends on more than the last item, which is what gives a
sequence model its edge over a first-order Markov chain:

* right after a search, the query's facet (and the user's own past
  purchases of that facet: "buy again");
* right after a category page, that department;
* otherwise co-view neighbours of the last three items (the last weighs
  most), items similar to the last one (its facet), the visit's intent
  department, items seen earlier in the visit, items bought together with
  what is in the cart, and a little popularity;
* add-to-cart is nearly always the item just viewed, and a checkout buys
  the cart's items in the order they were added.

The next action depends on the last action, the cart, whether the item is
already in the cart or a consumable due again, its price and how long the
visit has lasted.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from model_export.simulator.catalogue import Catalogue, Pool

BROWSE, SEARCH, CLICK, ADD, PURCHASE, END = range(6)
ITEM_ACTIONS = (CLICK, ADD, PURCHASE)

# Mixture components: (weight, kind, payload).
POOL, POINT, UNIFORM = range(3)
Mixture = list[tuple[float, int, object]]

MAX_SESSION_EVENTS = 60
CART_DAYS = 7  # carts forget items after a week
_DAY_MS = 86_400_000

# Next action after each action: (browse, search, click, add, purchase, end).
_AFTER = {
    SEARCH: (0.04, 0.10, 0.76, 0.0, 0.0, 0.10),
    BROWSE: (0.08, 0.06, 0.74, 0.0, 0.0, 0.12),
    CLICK: (0.06, 0.07, 0.50, 0.14, 0.0, 0.23),
    ADD: (0.04, 0.05, 0.38, 0.0, 0.33, 0.20),
    PURCHASE: (0.05, 0.07, 0.18, 0.0, 0.0, 0.70),
}


@dataclass
class SessionState:
    """Everything the simulator knows about one user between two events."""

    deviation: list[float]  # taste deviation (see users.drift)
    now: int = 0  # time of the last event, epoch ms
    in_session: bool = False
    session_no: int = 0
    n_in_session: int = 0
    last_action: int = END
    recent: list[int] = field(default_factory=list)  # last items of the visit, newest last
    seen: list[int] = field(default_factory=list)  # distinct items of the visit
    intent: int = 0  # the visit's department
    browse_dep: int = -1  # department of the category page just viewed
    search_pool: Pool | None = None
    buy_again: tuple[int, ...] = ()  # own past purchases matching the last search
    cart: list[list[int]] = field(default_factory=list)  # [item, added_ms, quantity]
    checkout: bool = False
    bought: dict[int, int] = field(default_factory=dict)  # consumable -> due again (ms)
    last_facet: dict[int, int] = field(default_factory=dict)  # department -> facet

    def copy(self) -> SessionState:
        """An independent copy, for the oracle's look-ahead."""
        return SessionState(
            self.deviation, self.now, self.in_session, self.session_no,
            self.n_in_session, self.last_action, list(self.recent), list(self.seen),
            self.intent, self.browse_dep, self.search_pool, self.buy_again,
            [list(c) for c in self.cart], self.checkout, dict(self.bought),
            dict(self.last_facet))

    def in_cart(self, item: int) -> bool:
        """Whether the item is in the cart."""
        return any(c[0] == item for c in self.cart)


def add_factor(price: float) -> float:
    """How much more (or less) likely an item is put in the cart, by its price."""
    if price < 20:
        return 1.3
    if price < 100:
        return 1.0
    if price < 500:
        return 0.7
    return 0.5


def action_weights(s: SessionState, cat: Catalogue) -> list[float]:
    """Probabilities of (browse, search, click, add, purchase, end) after the last event."""
    if s.checkout and s.cart:
        return [0.0, 0.0, 0.0, 0.0, 1.0, 0.0]
    if s.n_in_session >= MAX_SESSION_EVENTS:
        return [0.0, 0.0, 0.0, 0.0, 0.0, 1.0]
    w = list(_AFTER[s.last_action])
    if s.last_action == CLICK:
        item = s.recent[-1]
        if s.in_cart(item):
            w[ADD], w[PURCHASE], w[CLICK] = 0.0, 0.35, 0.30
        else:
            due = s.bought.get(item)
            if due is not None:
                # A consumable the user has bought before: they mostly buy it again.
                w[ADD] = 0.55 if due <= s.now + 2 * _DAY_MS else 0.3
                w[CLICK] = 0.2
            else:
                w[ADD] *= add_factor(cat.prices[item])
            if s.cart:
                w[PURCHASE] = 0.06
    if not s.cart:
        w[PURCHASE] = 0.0
    # Long visits tire people out.
    w[END] += min(0.25, 0.01 * s.n_in_session)
    total = sum(w)
    return [x / total for x in w]


def item_mixture(s: SessionState, cat: Catalogue, action: int) -> Mixture:
    """The distribution of the next item, given the next action (click, add or purchase)."""
    if action == PURCHASE:
        return [(1.0, POINT, s.cart[0][0])]
    recent = s.recent
    if action == ADD:
        weights = (0.85, 0.10, 0.05)
        return [(weights[j], POINT, recent[-1 - j]) for j in range(min(3, len(recent)))]
    mix: Mixture = []
    if s.last_action == SEARCH and s.search_pool is not None:
        mix.append((0.62, POOL, s.search_pool))
        if s.buy_again:
            mix.append((0.30, UNIFORM, s.buy_again))
        mix.append((0.08, POOL, cat.department_pool[s.intent]))
        mix.append((0.04, POOL, cat.popular))
        if recent:
            mix.append((0.08, POOL, cat.coview[recent[-1]]))
        return mix
    if s.last_action == BROWSE:
        mix.append((0.80, POOL, cat.department_pool[s.browse_dep]))
        mix.append((0.05, POOL, cat.popular))
        if recent:
            mix.append((0.10, POOL, cat.coview[recent[-1]]))
        return mix
    # After an item page, the cart or a purchase: what was viewed with the last items, and
    # the "similar items" of the last one (its facet, by popularity).
    for j, weight in enumerate((0.26, 0.08, 0.04)[:len(recent)]):
        mix.append((weight, POOL, cat.coview[recent[-1 - j]]))
    if recent:
        mix.append((0.18, POOL, cat.facet_pool[cat.item_facet[recent[-1]]]))
    if s.search_pool is not None:
        mix.append((0.10, POOL, s.search_pool))
    mix.append((0.12, POOL, cat.department_pool[s.intent]))
    earlier = tuple(i for i in s.seen if i != recent[-1]) if recent else ()
    if earlier:
        mix.append((0.08, UNIFORM, earlier))
    if s.last_action in (ADD, PURCHASE) and recent:
        mix.append((0.25, POOL, cat.copurchase[recent[-1]]))
    elif s.cart:
        mix.append((0.10, POOL, cat.copurchase[s.cart[-1][0]]))
    mix.append((0.03, POOL, cat.popular))
    return mix


@dataclass(frozen=True)
class StartOption:
    """One way a visit can begin: the first action, its department and item distribution."""

    p: float
    action: int
    department: int
    items: Mixture | None = None  # for a click
    facet: int | None = None  # for a search: None = choose by habit, -1 = broad query
    noun_item: int = -1  # a search for this past purchase ("buy again")


START_SEARCH, START_BROWSE, START_CLICK = 0.45, 0.35, 0.20
CART_RETURN = 0.45
DUE_RETURN = 0.55


def start_plan(s: SessionState, cat: Catalogue) -> tuple[list[StartOption], float]:
    """The special ways a visit may begin (back for the cart, buying a consumable again).

    Returns those options and the remaining probability, which goes to a
    visit driven by taste: see :func:`taste_option`. ``s`` must already be
    advanced to the visit's start (taste drifted, old cart items dropped).
    """
    options: list[StartOption] = []
    rest = 1.0
    if s.cart:
        # Back for the cart: look at the newest cart item again.
        item = s.cart[-1][0]
        options.append(StartOption(rest * CART_RETURN, CLICK, cat.item_department[item],
                                   [(1.0, POINT, item)]))
        rest *= 1.0 - CART_RETURN
    if s.bought:
        due = [i for i, t in s.bought.items() if t <= s.now]
        if due:
            item = min(due, key=lambda i: (s.bought[i], i))
            dep = cat.item_department[item]
            options.append(StartOption(rest * DUE_RETURN * 0.5, SEARCH, dep,
                                       facet=cat.item_facet[item], noun_item=item))
            options.append(StartOption(rest * DUE_RETURN * 0.5, CLICK, dep,
                                       [(1.0, POINT, item)]))
            rest *= 1.0 - DUE_RETURN
    return options, rest


TASTE_START = (START_SEARCH, START_BROWSE, START_CLICK)
TASTE_START_ACTIONS = (SEARCH, BROWSE, CLICK)


def taste_option(cat: Catalogue, dep: int, k: int, p: float) -> StartOption:
    """The ``k``-th way (search, category page, landing click) a taste-driven visit begins."""
    action = TASTE_START_ACTIONS[k]
    items: Mixture | None = None
    if action == CLICK:
        items = [(0.7, POOL, cat.department_pool[dep]), (0.3, POOL, cat.popular)]
    return StartOption(p, action, dep, items)


def start_options(s: SessionState, cat: Catalogue, taste: list[float]) -> list[StartOption]:
    """Every way the visit starting now may begin, with probabilities summing to one."""
    options, rest = start_plan(s, cat)
    for dep, p in enumerate(taste):
        if p * rest > 0.0:
            for k, share in enumerate(TASTE_START):
                options.append(taste_option(cat, dep, k, rest * p * share))
    return options


def choose(weights: list[float], rng: random.Random) -> int:
    """Index drawn with probability proportional to ``weights``."""
    r = rng.random() * sum(weights)
    for i, w in enumerate(weights):
        r -= w
        if r < 0.0:
            return i
    return max(i for i, w in enumerate(weights) if w > 0)


def draw_item(mix: Mixture, rng: random.Random) -> int:
    """One item from a mixture."""
    total = 0.0
    for w, _, _ in mix:
        total += w
    r = rng.random() * total
    chosen = mix[-1]
    for component in mix:
        r -= component[0]
        if r < 0.0:
            chosen = component
            break
    _, kind, payload = chosen
    if kind == POINT:
        return payload  # type: ignore[return-value]
    if kind == POOL:
        return payload.sample(rng)  # type: ignore[attr-defined]
    items: tuple[int, ...] = payload  # type: ignore[assignment]
    return items[int(rng.random() * len(items))]


def expire_cart(s: SessionState) -> None:
    """Drop cart items older than a week (the shop forgets abandoned carts)."""
    limit = s.now - CART_DAYS * _DAY_MS
    s.cart = [c for c in s.cart if c[1] >= limit]
