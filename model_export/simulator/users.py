"""Shoppers: how often they come back, when in the day, and what they like (drifting over time).

A user's taste is a vector of logits over departments: a shop-wide base, a
few strong favourites, and a deviation that follows an Ornstein-Uhlenbeck
walk in time, so tastes drift between visits and now and then a new interest
appears. Each visit (session) draws its intent department from the current
taste, so the recent sessions of a user say a lot about the next one.

Visits follow a daily rhythm (few at night, most in the evening): the next
session's start is drawn from the user's rate and then thinned by the hour
of day. A quarter of returns are the same day ("I'll finish this later").
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

import numpy as np

from model_export.simulator.catalogue import Catalogue

HOUR_MS = 3_600_000
DAY_MS = 24 * HOUR_MS
MIN_SESSION_GAP_MS = 35 * 60_000  # a pause of 30 minutes or more starts a new session

# Relative visit intensity by hour of day (UTC, the shop's one time zone).
RHYTHM = (0.14, 0.08, 0.05, 0.04, 0.05, 0.09, 0.22, 0.42, 0.58, 0.64, 0.68, 0.72,
          0.80, 0.74, 0.68, 0.68, 0.72, 0.82, 0.96, 1.00, 0.97, 0.86, 0.62, 0.34)

DRIFT_DAYS = 20.0  # memory of the taste deviation (OU time constant)
DRIFT_SD = 0.9  # stationary spread of the deviation, in logits
NEW_INTEREST_RATE = 0.03  # chance per session that a new favourite department appears
SAME_DAY_RETURN = 0.25
RATE_MEDIAN = 0.28  # sessions per day of the median user


@dataclass
class Profile:
    """The fixed traits of one user."""

    rate_per_day: float  # sessions per day, before the daily rhythm
    base_taste: list[float]  # logits over departments
    joined_ms: int
    facet_loyalty: float  # how often they return to the facet they chose before


def make_profile(catalogue: Catalogue, start_ms: int, end_ms: int, rng: random.Random
                 ) -> Profile:
    """Draw a user: activity (log-normal, heavy-tailed), favourite departments, join time."""
    n = catalogue.n_departments
    weights = [float(w) for w in catalogue.department_weight]
    base = [0.6 * math.log(max(w, 1e-9)) for w in weights]
    for _ in range(1 + int(rng.random() < 0.6) + int(rng.random() < 0.3)):
        fav = rng.choices(range(n), weights=weights)[0]
        base[fav] += rng.uniform(2.4, 3.4)
    rate = min(4.0, max(0.04, rng.lognormvariate(math.log(RATE_MEDIAN), 0.75)))
    # Most users are there from the start; some arrive during the period.
    if rng.random() < 0.75:
        joined = start_ms
    else:
        joined = start_ms + int(rng.random() * max(0, end_ms - start_ms - 2 * DAY_MS))
    return Profile(rate, base, joined, rng.uniform(0.3, 0.8))


class Normals:
    """Standard normal draws made by numpy in blocks and handed out as Python floats.

    One draw at a time from numpy costs microseconds of call overhead, and
    ``random.gauss`` is not much cheaper; a block of 512 amortises it.
    """

    def __init__(self, seed: int) -> None:
        self._gen = np.random.default_rng(seed)
        self._buffer: list[float] = []
        self._pos = 0

    def take(self, n: int) -> list[float]:
        """The next ``n`` draws."""
        if self._pos + n > len(self._buffer):
            self._buffer = self._gen.standard_normal(max(512, n)).tolist()
            self._pos = 0
        out = self._buffer[self._pos:self._pos + n]
        self._pos += n
        return out


def drift(deviation: list[float], gap_ms: int, normals: Normals, rng: random.Random
          ) -> list[float]:
    """The taste deviation ``gap_ms`` later (an exact Ornstein-Uhlenbeck step)."""
    a = math.exp(-gap_ms / (DRIFT_DAYS * DAY_MS))
    s = DRIFT_SD * math.sqrt(1.0 - a * a)
    out = [a * d + s * z for d, z in zip(deviation, normals.take(len(deviation)), strict=True)]
    if rng.random() < NEW_INTEREST_RATE:
        out[rng.randrange(len(out))] += 2.5
    return out


def taste_probabilities(profile: Profile, deviation: list[float]) -> list[float]:
    """The current probability of each department being a session's intent."""
    logits = [b + d for b, d in zip(profile.base_taste, deviation, strict=True)]
    top = max(logits)
    ex = [math.exp(x - top) for x in logits]
    total = sum(ex)
    return [e / total for e in ex]


def draw_department(taste: list[float], rng: random.Random) -> int:
    """A department drawn from taste probabilities."""
    r = rng.random()
    for dep, p in enumerate(taste):
        r -= p
        if r < 0.0:
            return dep
    return len(taste) - 1


def next_session_start(profile: Profile, after_ms: int, cart_waiting: bool,
                       rng: random.Random) -> int:
    """When the user comes back after a session that ended at ``after_ms``.

    An abandoned cart brings people back sooner: that is the signal a
    purchase-within-24-hours prediction feeds on.
    """
    if rng.random() < SAME_DAY_RETURN:
        t = after_ms + MIN_SESSION_GAP_MS + int(rng.lognormvariate(math.log(1.2), 0.8) * HOUR_MS)
    else:
        rate = profile.rate_per_day * (2.0 if cart_waiting else 1.0)
        t = after_ms + MIN_SESSION_GAP_MS + int(rng.expovariate(rate) * DAY_MS)
    # Thinning by the daily rhythm: a visit drawn at night is usually put off.
    while rng.random() > RHYTHM[(t // HOUR_MS) % 24]:
        t += int(rng.expovariate(1.0) * HOUR_MS)
    return t


def first_session_start(profile: Profile, rng: random.Random) -> int:
    """When the user's first visit in the log happens."""
    t = profile.joined_ms + int(rng.expovariate(profile.rate_per_day * 1.5) * DAY_MS)
    while rng.random() > RHYTHM[(t // HOUR_MS) % 24]:
        t += int(rng.expovariate(1.0) * HOUR_MS)
    return t
