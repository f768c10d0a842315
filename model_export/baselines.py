"""Baselines a model must beat, fitted on the same training split, scored the same way.

- ``popular``: the most popular training items, the most common next action,
  the base purchase rate and the median gap, whatever the user did.
- ``markov``: first-order transitions learned from training: the items that
  most often followed the user's last item (then popular items), the next
  action given the current one, and purchase rate and median gap given the
  current action.
- ``oracle``: the simulator's own beliefs just before each event (its oracle
  file), the best any model could do on simulated data.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import orjson

from model_export.data import IGNORE, Case, Prepared, purchase_label
from streams.contracts import ACTIONS

N_ACTIONS = len(ACTIONS)


@dataclass
class Forecast:
    """What a predictor says about one held-out case."""

    items: list[str]  # ranked item ids, best first
    action: np.ndarray  # (5,) probabilities in ACTIONS order
    purchase: float  # P(purchase within the horizon)
    seconds: float | None  # median seconds to the next event, None when not predicted


def _training_pairs(data: Prepared):  # type: ignore[no-untyped-def]
    """(user, t, last item id at or before t) for every input t whose target is training data."""
    for user in data.users:
        last_item: str | None = None
        for t in range(user.n_train - 1):
            if user.events[t].item_id is not None:
                last_item = user.events[t].item_id
            yield user, t, last_item


def last_item(case: Case) -> str | None:
    """The most recent item the user touched up to the case's window end."""
    for event in reversed(case.user.events[: case.t + 1]):
        if event.item_id is not None:
            return event.item_id
    return None


class Popular:
    """The same forecast for everyone: what is most common in training."""

    def __init__(self, data: Prepared, k: int = 100) -> None:
        counts: Counter[str] = Counter()
        actions = np.zeros(N_ACTIONS)
        purchases: list[int] = []
        gaps: list[float] = []
        for user in data.users:
            counts.update(e.item_id for e in user.events[: user.n_train] if e.item_id)
        for user, t, _ in _training_pairs(data):
            actions[user.actions[t + 1]] += 1
            label = purchase_label(user, t, user.n_train, data.horizon_ms, censor=True)
            if label != IGNORE:
                purchases.append(label)
            gaps.append((int(user.ts_ms[t + 1]) - int(user.ts_ms[t])) / 1000.0)
        self.ranking = [item for item, _ in counts.most_common(k)]
        self.action = actions / max(1.0, actions.sum())
        self.purchase = float(np.mean(purchases)) if purchases else 0.0
        self.seconds = float(np.median(gaps)) if gaps else 0.0

    def forecast(self, case: Case) -> Forecast:
        """The popular forecast (it ignores the case)."""
        return Forecast(self.ranking, self.action, self.purchase, self.seconds)


class Markov:
    """First-order transitions from the user's current state, falling back to popular."""

    def __init__(self, data: Prepared, k: int = 100) -> None:
        self.k = k
        self.popular = Popular(data, k)
        items: dict[str, Counter[str]] = defaultdict(Counter)
        actions = np.ones((N_ACTIONS, N_ACTIONS))  # add-one smoothing
        purchase = np.ones((N_ACTIONS, 2))  # [negatives, positives], smoothed
        gaps: dict[int, list[float]] = defaultdict(list)
        for user, t, last in _training_pairs(data):
            nxt = user.events[t + 1].item_id
            if last is not None and nxt is not None:
                items[last][nxt] += 1
            a = int(user.actions[t])
            actions[a, user.actions[t + 1]] += 1
            label = purchase_label(user, t, user.n_train, data.horizon_ms, censor=True)
            if label != IGNORE:
                purchase[a, label] += 1
            gaps[a].append((int(user.ts_ms[t + 1]) - int(user.ts_ms[t])) / 1000.0)
        self.items = items
        self.action = actions / actions.sum(axis=1, keepdims=True)
        self.purchase = purchase[:, 1] / purchase.sum(axis=1)
        self.seconds = {a: float(np.median(g)) for a, g in gaps.items()}

    def forecast(self, case: Case) -> Forecast:
        """Transitions from the case's last item and last action."""
        last = last_item(case)
        ranked = [i for i, _ in self.items[last].most_common(self.k)] if last in self.items \
            else []
        seen = set(ranked)
        ranked += [i for i in self.popular.ranking if i not in seen][: self.k - len(ranked)]
        a = int(case.user.actions[case.t])
        return Forecast(ranked, self.action[a], float(self.purchase[a]),
                        self.seconds.get(a, self.popular.seconds))


class Oracle:
    """The simulator's beliefs, read from its oracle file (one JSON object per event)."""

    def __init__(self, path: Path | str) -> None:
        self.records: dict[tuple[str, str], dict] = {}  # type: ignore[type-arg]
        opener = _open(Path(path))
        with opener as fh:
            for line in fh:
                if line.strip():
                    rec = orjson.loads(line)
                    self.records[(str(rec["user_id"]), str(rec["event_id"]))] = rec

    def forecast(self, case: Case) -> Forecast | None:
        """The oracle's view just before the case's target event, or None if it has none."""
        target = case.user.events[case.t + 1]
        rec = self.records.get((target.user_id, target.event_id))
        if rec is None:
            return None
        ranked = sorted(rec.get("next_items", []), key=lambda x: -float(x.get("p", 0.0)))
        probs = rec.get("next_action", {})
        if isinstance(probs, dict):
            action = np.array([float(probs.get(a, 0.0)) for a in ACTIONS])
        else:
            action = np.asarray(probs, dtype=np.float64)
        seconds = rec.get("next_event_seconds")
        return Forecast([str(x["item_id"]) for x in ranked], action,
                        float(rec.get("purchase_probability", 0.0)),
                        None if seconds is None else float(seconds))


def _open(path: Path):  # type: ignore[no-untyped-def]
    if path.suffix == ".gz":
        import gzip

        return gzip.open(path, "rb")
    return path.open("rb")
