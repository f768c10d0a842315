"""The report's charts, drawn with matplotlib (Agg, no display) into PNG bytes."""

from __future__ import annotations

import io
from typing import Any

import matplotlib

matplotlib.use("Agg")  # a server has no display; must precede pyplot
import matplotlib.pyplot as plt  # noqa: E402

STEP_COLOURS = ("#4c78a8", "#72b7b2", "#f58518", "#54a24b")


def label(text: str, limit: int = 40) -> str:
    r"""Text from the log as a chart label: cut short, and ``$`` kept literal.

    matplotlib reads ``$...$`` as maths: ``$5 to $10`` would show as a formula and
    ``$\frac{$`` would break the chart (and the report) instead of showing as typed.
    """
    text = text if len(text) <= limit else text[:limit - 1] + "…"
    return text.replace("$", r"\$")


def _png(fig: Any) -> bytes:
    buffer = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buffer, format="png", dpi=100)
    plt.close(fig)
    return buffer.getvalue()


def funnel_chart(funnel: dict[str, Any]) -> bytes:
    """Visits reaching each step, with the conversion from the step before."""
    steps = funnel["steps"]
    overall = funnel["overall"]
    counts = [overall["visits"][s] for s in steps]
    fig, ax = plt.subplots(figsize=(7, 3.2))
    bars = ax.barh(steps[::-1], counts[::-1], color=STEP_COLOURS[::-1])
    for bar, step in zip(bars, steps[::-1], strict=True):
        rate = overall["conversion"].get(step)
        label = f"{int(bar.get_width()):,}" + (f"  ({rate:.1%} of the step before)"
                                               if rate is not None else "")
        ax.text(bar.get_width(), bar.get_y() + bar.get_height() / 2, " " + label,
                va="center", fontsize=9)
    ax.set_xlim(0, max(counts + [1]) * 1.6)
    ax.set_xlabel("visits reaching the step")
    ax.set_title("Funnel: visits")
    return _png(fig)


def category_chart(funnel: dict[str, Any], top: int = 12) -> bytes:
    """Step conversion per category (the busiest ones)."""
    rows = list(funnel["by_category"].items())[:top][::-1]
    fig, ax = plt.subplots(figsize=(7, 0.35 * len(rows) + 1.4))
    height = 0.27
    for k, step in enumerate(funnel["steps"][1:]):
        values = [(row["conversion"][step] or 0.0) for _, row in rows]
        ax.barh([i + (1 - k) * height for i in range(len(rows))], values, height=height,
                label=f"→ {step}", color=STEP_COLOURS[k + 1])
    ax.set_yticks(range(len(rows)), [label(name) for name, _ in rows], fontsize=8)
    ax.set_xlim(0, 1)
    ax.set_xlabel("conversion from the step before")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    ax.set_title("Funnel by category")
    return _png(fig)


def visits_chart(visits: dict[str, Any], cap: int = 30) -> bytes:
    """Histogram of events per visit."""
    hist = {int(k): v for k, v in visits["events_histogram"].items()}
    xs = list(range(1, cap + 1))
    ys = [hist.get(x, 0) for x in xs]
    ys[-1] += sum(v for k, v in hist.items() if k > cap)
    fig, ax = plt.subplots(figsize=(7, 3))
    ax.bar(xs, ys, color="#4c78a8")
    ax.set_xlabel(f"events per visit ({cap} = {cap} or more)")
    ax.set_ylabel("visits")
    ax.set_title(f"Visits (bounce rate {visits['bounce_rate'] or 0:.1%})")
    return _png(fig)


def cohort_chart(returns: dict[str, Any]) -> bytes:
    """Retention by cohort week: share active again k weeks after the first visit."""
    cohorts = returns["cohorts"]
    weeks = max((sum(v is not None for v in c["retention"]) for c in cohorts), default=0)
    weeks = max(weeks, 1)
    grid = [[(v if v is not None else float("nan")) for v in c["retention"][:weeks]]
            for c in cohorts]
    fig, ax = plt.subplots(figsize=(7, 0.4 * len(cohorts) + 1.4))
    image = ax.imshow(grid or [[float("nan")]], cmap="Blues", vmin=0, vmax=1, aspect="auto")
    for i, row in enumerate(grid):
        for j, v in enumerate(row):
            if v == v:  # not NaN
                ax.text(j, i, f"{v:.0%}", ha="center", va="center", fontsize=8,
                        color="white" if v > 0.6 else "black")
    ax.set_xticks(range(weeks), [f"week {k + 1}" for k in range(weeks)], fontsize=8)
    ax.set_yticks(range(len(cohorts)), [f"{c['week']} ({c['users']:,})" for c in cohorts],
                  fontsize=8)
    fig.colorbar(image, ax=ax, fraction=0.03)
    ax.set_title("Returning users by cohort (week of first visit)")
    return _png(fig)


def search_chart(search: dict[str, Any], top: int = 12) -> bytes:
    """The queries most often followed by no click, beside all their searches."""
    rows = search["top_zero_click_queries"][:top][::-1]
    fig, ax = plt.subplots(figsize=(7, 0.32 * len(rows) + 1.4))
    # Positions, not the labels, place the bars: two queries cut to the same label stay apart.
    at = range(len(rows))
    ax.barh(at, [r["searches"] for r in rows], color="#c6dbef", label="searches")
    ax.barh(at, [r["zero_click"] for r in rows], color="#e45756", label="no click after")
    ax.set_yticks(at, [label(r["query"]) for r in rows], fontsize=8)
    ax.legend(fontsize=8, loc="lower right")
    ax.set_title(f"Searches that found nothing wanted ({search['zero_click_rate'] or 0:.1%} "
                 "of all)")
    return _png(fig)


def affinity_chart(affinity: dict[str, Any]) -> bytes:
    """Moves between categories, each row as shares of the moves out of that category."""
    names = affinity["categories"]
    rows = []
    for row in affinity["moves"]:
        total = sum(row)
        rows.append([v / total if total else 0.0 for v in row])
    fig, ax = plt.subplots(figsize=(7.5, 6.5))
    image = ax.imshow(rows or [[0.0]], cmap="viridis", vmin=0, vmax=1)
    names = [label(name, 24) for name in names]
    ax.set_xticks(range(len(names)), names, rotation=60, ha="right", fontsize=8)
    ax.set_yticks(range(len(names)), names, fontsize=8)
    ax.set_xlabel("to")
    ax.set_ylabel("from")
    fig.colorbar(image, ax=ax, fraction=0.04, label="share of moves from the row")
    ax.set_title("Category affinity")
    return _png(fig)


def revenue_chart(revenue: dict[str, Any]) -> bytes:
    """Revenue per day."""
    days = list(revenue["by_day"])
    fig, ax = plt.subplots(figsize=(7, 3))
    ax.plot(range(len(days)), list(revenue["by_day"].values()), color="#54a24b")
    step = max(1, len(days) // 8)
    ax.set_xticks(range(0, len(days), step), days[::step], rotation=30, ha="right",
                  fontsize=8)
    ax.set_ylabel("revenue")
    ax.set_title(f"Revenue per day (total {revenue['total']:,.0f})")
    return _png(fig)
