"""Running the simulation: every user, optionally in parallel, merged into one log sorted by time.

Each user is simulated alone from a generator derived from the master seed
and the user's index, so the result does not depend on how users are split
over processes: one process or two give the same bytes. Workers serialise
their users' events themselves (the parent only sorts and writes), which is
what makes a million events take seconds rather than minutes.
"""

from __future__ import annotations

import multiprocessing
import os
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson

from model_export.simulator.catalogue import Catalogue, build_catalogue
from model_export.simulator.oracle import (
    DEFAULT_ROLLOUTS,
    oracle_line,
    oracle_record,
    oracle_rng,
    predict,
)
from model_export.simulator.shopper import Event, Shopper
from model_export.simulator.writer import event_id, event_line, user_id

# The log ends here (UTC): in the past, so a worker's "not in the future" check accepts it,
# and fixed, so the same seed gives the same file whatever day it is run.
END_MS = 1_793_491_200_000  # 2026-11-01T00:00:00Z
DAY_MS = 86_400_000
MIN_EVENTS_PER_USER = 3  # a time split needs a test, a validation and a training event
_CHUNK_USERS = 64


@dataclass(frozen=True)
class Config:
    """What to simulate."""

    users: int
    items: int
    days: float
    seed: int
    oracle: bool = False
    rollouts: int = DEFAULT_ROLLOUTS
    end_ms: int = END_MS

    @property
    def start_ms(self) -> int:
        """Time of the log's beginning."""
        return self.end_ms - int(self.days * DAY_MS)


@dataclass
class UserLog:
    """One user's events (serialised) and oracle lines."""

    user: int
    ts: list[int]
    lines: list[bytes]
    oracle: list[bytes] = field(default_factory=list)


def simulate_user(cat: Catalogue, cfg: Config, user: int) -> UserLog:
    """Simulate one user's whole history, and the oracle for their last two events."""
    for attempt in range(20):
        shopper = Shopper.new(cat, cfg.seed, user, cfg.start_ms, cfg.end_ms, attempt)
        events: list[Event] = []
        # States just before each of the last events were drawn, for the oracle.
        before: deque[Any] = deque(maxlen=3)
        while True:
            if cfg.oracle:
                before.append(shopper.s.copy())
            ev = shopper.step()
            if ev is None:
                break
            events.append(ev)
        if len(events) >= MIN_EVENTS_PER_USER:
            break
    log = UserLog(user, [e.ts for e in events],
                  [event_line(cat, cfg.seed, user, j, e) for j, e in enumerate(events)])
    if cfg.oracle and len(events) >= MIN_EVENTS_PER_USER:
        n = len(events)
        states = list(before)[-3:-1]  # before event n-2 and before event n-1
        for position, state in zip((n - 2, n - 1), states, strict=True):
            look = Shopper(cat, shopper.profile, state, shopper.rng, cfg.end_ms)
            pred = predict(look, oracle_rng(cfg.seed, user, position), cfg.rollouts)
            log.oracle.append(oracle_line(oracle_record(
                cat, user_id(user), event_id(cfg.seed, user, position), events[position].ts,
                pred)))
    return log


# Worker processes receive the catalogue once, through the pool initializer.
_WORKER: dict[str, Any] = {}


def _init_worker(cat: Catalogue, cfg: Config) -> None:
    _WORKER["cat"], _WORKER["cfg"] = cat, cfg


def _run_chunk(users: range) -> list[UserLog]:
    return [simulate_user(_WORKER["cat"], _WORKER["cfg"], u) for u in users]


def user_logs(cat: Catalogue, cfg: Config, workers: int = 1) -> Iterator[UserLog]:
    """Every user's log, in user order, computed in ``workers`` processes."""
    chunks = [range(a, min(a + _CHUNK_USERS, cfg.users)) for a in range(0, cfg.users,
                                                                        _CHUNK_USERS)]
    if workers <= 1 or len(chunks) <= 1:
        for chunk in chunks:
            yield from (simulate_user(cat, cfg, u) for u in chunk)
        return
    ctx = multiprocessing.get_context("fork" if os.name == "posix" else "spawn")
    with ctx.Pool(workers, initializer=_init_worker, initargs=(cat, cfg)) as pool:
        for logs in pool.imap(_run_chunk, chunks):
            yield from logs


@dataclass
class Simulation:
    """A finished simulation: the catalogue, the log's lines sorted by time, oracle lines."""

    catalogue: Catalogue
    lines: list[bytes]
    oracle_lines: list[bytes]

    @property
    def events(self) -> list[dict[str, Any]]:
        """The events as Event v1 dicts, sorted by time."""
        return [orjson.loads(line) for line in self.lines]

    @property
    def oracle(self) -> list[dict[str, Any]]:
        """The oracle records (see :mod:`model_export.simulator.oracle`)."""
        return [orjson.loads(line) for line in self.oracle_lines]


def run(cfg: Config, workers: int = 1, progress: bool = False) -> Simulation:
    """Run a simulation; ``progress`` shows a bar on stderr."""
    for name in ("users", "items"):
        if getattr(cfg, name) < 1:
            raise ValueError(f"--{name} must be at least 1, got {getattr(cfg, name)}")
    if cfg.days <= 0:
        raise ValueError(f"--days must be positive, got {cfg.days}")
    cat = build_catalogue(cfg.items, cfg.seed)
    ts: list[int] = []
    owner: list[int] = []
    lines: list[bytes] = []
    oracle: list[bytes] = []
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=cfg.users, unit="user", desc="simulating", mininterval=0.5)
    for log in user_logs(cat, cfg, workers):
        ts.extend(log.ts)
        owner.extend([log.user] * len(log.ts))
        lines.extend(log.lines)
        oracle.extend(log.oracle)
        if bar is not None:
            bar.update(1)
            bar.set_postfix(events=len(lines), refresh=False)
    if bar is not None:
        bar.close()
    # Sorted by time; ties by user, then by position (a stable sort keeps it).
    order = np.lexsort((np.asarray(owner, dtype=np.int64), np.asarray(ts, dtype=np.int64)))
    return Simulation(cat, [lines[i] for i in order], oracle)


def simulate(users: int, items: int, days: float, seed: int, *, oracle: bool = False,
             rollouts: int = DEFAULT_ROLLOUTS, workers: int = 1) -> Simulation:
    """Simulate a shop: ``users`` shoppers over ``days`` days with ``items`` items.

    The same arguments always give the same events (and oracle), whatever
    ``workers`` is.
    """
    return run(Config(users, items, days, seed, oracle, rollouts), workers)
