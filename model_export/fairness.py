"""Fairness report: whom the model serves well, and whether it only pushes best-sellers.

The test cases of :func:`model_export.evaluate.evaluate` are cut into segments
of users, and every predictor is scored on each segment with the same
:func:`model_export.evaluate.score`. Segments are decided only from what is
known before the test event: the window the prediction reads, and the user's
training events. Thresholds (top categories, activity tertiles) are fitted on
the training split of all users; nothing about a test target picks a segment.

Groups, in :data:`DEFINITIONS`:

- ``new_vs_returning``: ``new`` users are still in their first visit when the
  prediction is made; ``returning`` users had an earlier visit.
- ``history_length``: ``short`` windows of at most :data:`SHORT_HISTORY_MAX`
  events, ``long`` windows of more.
- ``main_category``: the category a user's training events carry most often;
  the :data:`TOP_CATEGORIES` busiest training categories get a segment each,
  the rest (and users whose training events carry no category) are ``other``.
- ``activity_level``: training events per active day, cut at the tertiles of
  all users' training activity into ``low``, ``medium`` and ``high``.

Two catalogue-wide measures sit beside them: popularity bias (the share of
recommended slots taken by the most popular 1% of items, against those items'
share of the actual next items) and coverage (the share of the catalogue that
appears in anyone's top 10).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from model_export.baselines import Forecast
from model_export.data import Case, Prepared, UserHistory
from model_export.evaluate import K, score

# A visit ends after 30 minutes without events (the usual web-analytics session timeout),
# or where the event's session id changes.
VISIT_GAP_MS = 30 * 60 * 1000
SHORT_HISTORY_MAX = 10  # the by-history-length buckets also split at 10 events
TOP_CATEGORIES = 5
POPULAR_FRACTION = 0.01  # "the most popular 1% of items"
DAY_MS = 24 * 3600 * 1000

DEFINITIONS = {
    "new_vs_returning": (
        "new: every event up to the prediction belongs to one visit (no session-id change "
        "and no gap of 30 minutes or more); returning: the user had an earlier visit"),
    "history_length": (
        f"short: the prediction's window holds at most {SHORT_HISTORY_MAX} events; "
        "long: more"),
    "main_category": (
        "the category most frequent among the user's training events (ties: the first "
        f"seen); the {TOP_CATEGORIES} categories with the most training events are named, "
        "the rest and users with no category are 'other'"),
    "activity_level": (
        "training events per active UTC day, cut at the tertiles of that rate over all "
        "users' training events: low <= first cut < medium <= second cut < high"),
    "popularity_bias": (
        f"popular items: the top {POPULAR_FRACTION:.0%} of the catalogue (at least one) by "
        f"training-split events; recommended_share: their share of all top-{K} slots; "
        "actual_share: their share of the test events that have an item; "
        "ratio: recommended_share / actual_share (1 is no bias)"),
    "coverage": (
        f"distinct items in any test user's top {K}, divided by the catalogue size "
        "(items seen in training, which is all a predictor can rank)"),
}


def is_returning(case: Case) -> bool:
    """True when the user had a visit before the one the prediction is made in."""
    events = case.user.events[: case.t + 1]
    for before, after in zip(events, events[1:], strict=False):
        if after.ts_ms - before.ts_ms >= VISIT_GAP_MS:
            return True
        if before.session_id and after.session_id and before.session_id != after.session_id:
            return True
    return False


def main_category(user: UserHistory) -> str | None:
    """The category the user's training events carry most often (None if they carry none)."""
    counts = Counter(e.category for e in user.events[: user.n_train] if e.category)
    return counts.most_common(1)[0][0] if counts else None


def events_per_active_day(user: UserHistory) -> float:
    """Training events per UTC calendar day on which the user had a training event."""
    train = user.events[: user.n_train]
    days = {e.ts_ms // DAY_MS for e in train}
    return len(train) / len(days) if days else 0.0


@dataclass(frozen=True)
class Segmenter:
    """Segment rules fitted on the training split: the named categories and activity cuts."""

    top_categories: tuple[str, ...]
    activity_cuts: tuple[float, float]

    @classmethod
    def fit(cls, data: Prepared, top: int = TOP_CATEGORIES) -> Segmenter:
        """Rules from the training events of every user (test targets are never read)."""
        categories: Counter[str] = Counter()
        rates = []
        for user in data.users:
            categories.update(e.category for e in user.events[: user.n_train] if e.category)
            if user.n_train:
                rates.append(events_per_active_day(user))
        cuts = np.quantile(rates, [1 / 3, 2 / 3]) if rates else np.zeros(2)
        ranked = sorted(categories, key=lambda c: (-categories[c], c))
        return cls(tuple(ranked[:top]), (float(cuts[0]), float(cuts[1])))

    def groups(self) -> dict[str, list[str]]:
        """Every group's segment names, in report order."""
        return {"new_vs_returning": ["new", "returning"],
                "history_length": ["short", "long"],
                "main_category": [*self.top_categories, "other"],
                "activity_level": ["low", "medium", "high"]}

    def assign(self, case: Case) -> dict[str, str]:
        """The case's segment in each group."""
        category = main_category(case.user)
        rate = events_per_active_day(case.user)
        low, high = self.activity_cuts
        return {
            "new_vs_returning": "returning" if is_returning(case) else "new",
            "history_length": "short" if case.history_length <= SHORT_HISTORY_MAX else "long",
            "main_category": category if category in self.top_categories else "other",
            "activity_level": "low" if rate <= low else "medium" if rate <= high else "high",
        }


def popular_items(data: Prepared, fraction: float = POPULAR_FRACTION) -> set[str]:
    """The most popular ``fraction`` of the catalogue by training events (at least one item)."""
    counts = Counter(e.item_id for u in data.users for e in u.events[: u.n_train] if e.item_id)
    n = max(1, math.ceil(fraction * len(data.items.tokens)))
    return set(sorted(counts, key=lambda i: (-counts[i], i))[:n])


def popular_share(forecasts: Sequence[Forecast | None], popular: set[str],
                  k: int = K) -> float | None:
    """Share of all top-``k`` slots filled with popular items (None without any slot)."""
    slots = [item for f in forecasts if f is not None for item in f.items[:k] if item]
    return _round(sum(item in popular for item in slots) / len(slots)) if slots else None


def popularity_bias(cases: Sequence[Case], predictors: dict[str, Sequence[Forecast | None]],
                    popular: set[str], k: int = K) -> dict[str, Any]:
    """Popular items' share of the recommendations of each predictor vs of the actual items."""
    targets = [c.next_item_id for c in cases if c.next_item_id is not None]
    actual = sum(t in popular for t in targets) / len(targets) if targets else None
    out: dict[str, Any] = {"popular_items": len(popular), "actual_share": _round(actual)}
    for name, forecasts in predictors.items():
        share = popular_share(forecasts, popular, k)
        ratio = share / actual if share is not None and actual else None
        out[name] = {"recommended_share": share, "ratio": _round(ratio)}
    return out


def coverage(predictors: dict[str, Sequence[Forecast | None]], catalogue_size: int,
             k: int = K) -> dict[str, Any]:
    """Distinct items in anyone's top ``k``, per predictor, as a share of the catalogue."""
    out: dict[str, Any] = {"catalogue_size": catalogue_size}
    for name, forecasts in predictors.items():
        # "" is a reserved index the scorer may rank on a tiny catalogue; it is no item.
        distinct = {item for f in forecasts if f is not None for item in f.items[:k] if item}
        out[name] = {"distinct_items": len(distinct),
                     "coverage": _round(len(distinct) / catalogue_size) if catalogue_size
                     else None}
    return out


def segment_report(data: Prepared, cases: Sequence[Case],
                   predictors: dict[str, Sequence[Forecast | None]]) -> dict[str, Any]:
    """The ``segments`` section: every predictor's metrics per segment, bias and coverage."""
    segmenter = Segmenter.fit(data)
    popular = popular_items(data)
    labels = [segmenter.assign(c) for c in cases]
    report: dict[str, Any] = {
        "definitions": DEFINITIONS,
        "thresholds": {"short_history_max_events": SHORT_HISTORY_MAX,
                       "top_categories": list(segmenter.top_categories),
                       "activity_events_per_active_day": [round(x, 4) for x in
                                                          segmenter.activity_cuts],
                       "popular_items": len(popular)},
    }
    for group, names in segmenter.groups().items():
        rows = []
        for name in names:
            picked = [i for i, lab in enumerate(labels) if lab[group] == name]
            row: dict[str, Any] = {"segment": name, "n": len(picked)}
            sub = [cases[i] for i in picked]
            for predictor, forecasts in predictors.items():
                chosen = [forecasts[i] for i in picked]
                row[predictor] = {**score(sub, chosen),
                                  f"popular_share@{K}": popular_share(chosen, popular)}
            rows.append(row)
        report[group] = rows
    report["popularity_bias"] = popularity_bias(cases, predictors, popular)
    report["coverage"] = coverage(predictors, len(data.items.tokens))
    return report


def format_segments(section: dict[str, Any]) -> str:
    """The segments as a table: ndcg@10 and action accuracy of each predictor per segment."""
    groups = [g for g in DEFINITIONS if isinstance(section.get(g), list)]
    first = section[groups[0]][0]
    names = [k for k in first if isinstance(first[k], dict)]
    head = (f"{'segment':<26}{'n':>6}  " + "".join(f"{f'ndcg {n}':>14}" for n in names)
            + "  " + "".join(f"{f'acc {n}':>13}" for n in names) + f"{'top1% model':>13}")
    lines = [head]
    for group in groups:
        lines.append(f"[{group}]")
        for row in section[group]:
            ndcg = "".join(_cell(row[n].get(f"ndcg@{K}"), 14) for n in names)
            acc = "".join(_cell(row[n].get("action_accuracy"), 13) for n in names)
            pop = _cell(row["model"].get(f"popular_share@{K}"), 13) if "model" in row else ""
            lines.append(f"  {row['segment'][:24]:<24}{row['n']:>6}  {ndcg}  {acc}{pop}")
    bias, cover = section["popularity_bias"], section["coverage"]
    lines.append(f"popularity bias (top {bias['popular_items']} items = 1% of the catalogue; "
                 f"their share of actual next items {_fmt(bias['actual_share'])}):")
    for n in names:
        lines.append(f"  {n:<10} share of top-{K} slots {_fmt(bias[n]['recommended_share'])}"
                     f"  ratio {_fmt(bias[n]['ratio'])}")
    lines.append(f"catalogue coverage@{K} ({cover['catalogue_size']} items):")
    for n in names:
        lines.append(f"  {n:<10} {cover[n]['distinct_items']:>6} items  "
                     f"coverage {_fmt(cover[n]['coverage'])}")
    return "\n".join(lines)


def plot_segments(section: dict[str, Any], path: Path | str) -> Path:
    """A PNG of ndcg@10 per segment, one panel per group, one bar per predictor."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = [g for g in DEFINITIONS if isinstance(section.get(g), list)]
    first = section[groups[0]][0]
    names = [k for k in first if isinstance(first[k], dict)]
    fig, axes = plt.subplots(1, len(groups), figsize=(4 * len(groups) + 2, 4.2), sharey=True)
    width = 0.8 / len(names)
    for ax, group in zip(np.atleast_1d(axes), groups, strict=True):
        rows = section[group]
        for j, name in enumerate(names):
            ys = [row[name].get(f"ndcg@{K}") for row in rows]
            ax.bar(np.arange(len(rows)) + j * width, [np.nan if y is None else y for y in ys],
                   width, label=name)
        ax.set_xticks(np.arange(len(rows)) + width * (len(names) - 1) / 2,
                      [f"{r['segment']}\n(n={r['n']})" for r in rows], fontsize=8,
                      rotation=30 if len(rows) > 3 else 0, ha="right" if len(rows) > 3
                      else "center")
        ax.set_title(group.replace("_", " "))
        ax.grid(alpha=0.3, axis="y")
    np.atleast_1d(axes)[0].set_ylabel(f"ndcg@{K} (test split)")
    np.atleast_1d(axes)[0].legend(fontsize=8)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def _round(value: float | None) -> float | None:
    return None if value is None else round(float(value), 6)


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def _cell(value: float | None, width: int) -> str:
    return _fmt(value).rjust(width)
