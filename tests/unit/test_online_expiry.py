"""Online accuracy forgets users idle for longer than the window TTL (found by the soak).

With users coming and going, remembering up to 200,000 of them made a worker's memory grow
by about 250 MiB an hour in benchmarks/soak.py although its windows stayed bounded.
"""

from __future__ import annotations

import numpy as np

from streams import online
from streams.contracts import Event
from streams.metrics import WorkerMetrics
from streams.online import OnlineAccuracy


def observe(tracker: OnlineAccuracy, user: str, n: int) -> None:
    event = Event(f"{user}-{n}", user, "click", 1_764_000_000_000 + n, item_id="sku-1")
    tracker.observe([event], [3], np.arange(10)[None, :], np.full((1, 5), 0.2),
                    np.array([0.1]))


def test_users_idle_longer_than_the_ttl_are_forgotten(monkeypatch):
    now = [1000.0]
    monkeypatch.setattr(online.time, "time", lambda: now[0])
    tracker = OnlineAccuracy(WorkerMetrics(), horizon_ms=86_400_000, idle_ms=30_000)
    observe(tracker, "u-old", 1)
    now[0] += 20
    observe(tracker, "u-busy", 1)
    now[0] += 20  # u-old idle 40 s, u-busy 20 s
    observe(tracker, "u-new", 1)
    assert list(tracker._last) == ["u-busy", "u-new"]
    now[0] += 25
    observe(tracker, "u-busy", 2)  # seen again: moves to the end, kept
    assert list(tracker._last) == ["u-new", "u-busy"]


def test_without_an_idle_limit_only_max_users_bounds_it(monkeypatch):
    tracker = OnlineAccuracy(WorkerMetrics(), horizon_ms=1, max_users=2)
    for user in ("a", "b", "c"):
        observe(tracker, user, 1)
    assert list(tracker._last) == ["b", "c"]


def test_what_is_remembered_of_users_is_not_tracked_by_the_garbage_collector():
    # Up to 200,000 users' entries: as objects, every full collection would visit them
    # all while holding the GIL (a pause for every thread of the worker).
    import gc

    tracker = OnlineAccuracy(WorkerMetrics(), horizon_ms=86_400_000)
    for user in range(50):
        observe(tracker, f"u-{user}", 1)
    # A tuple is untracked in a collection that finds nothing in it that could be; the
    # items' tuple first, the entry holding it in the next.
    gc.collect()
    gc.collect()
    assert len(tracker._last) == 50
    assert not any(gc.is_tracked(entry) for entry in tracker._last.values())
