"""Honest evaluation: the ONNX bundle, exactly as serving runs it, on each user's last event.

The model is scored through ``streams.scorer.Scorer`` (onnxruntime), on the
test split only, with full-catalogue ranking. The baselines are fitted on the
same training split and scored by the same code. Nothing here is used to
choose anything: early stopping and every other choice use validation.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from model_export import metrics
from model_export.baselines import Forecast, Markov, Oracle, Popular
from model_export.data import Case, EventLog, Prepared, held_out_cases, prepare
from streams.bundle import Bundle

K = 10
# History-length buckets of the plot and the report: window sizes at prediction time.
LENGTH_BUCKETS: tuple[tuple[int, int], ...] = ((1, 2), (3, 5), (6, 10), (11, 20), (21, 49),
                                               (50, 10_000))
# The acceptance targets, relative to the baselines on the same split.
TARGET_VS_MARKOV = 1.10
TARGET_VS_POPULAR = 2.0  # "far above popular": at least twice its ndcg@10
TARGET_VS_ORACLE = 0.90


def score(cases: Sequence[Case], forecasts: Sequence[Forecast | None]) -> dict[str, Any]:
    """All metrics of one predictor over the cases it has a forecast for."""
    pairs = [(c, f) for c, f in zip(cases, forecasts, strict=True) if f is not None]
    with_item = [(c, f) for c, f in pairs if c.next_item_id is not None]
    ranks = [metrics.rank_of(c.next_item_id, f.items[:K]) for c, f in with_item]
    y_true = [c.next_action for c, _ in pairs]
    y_pred = [int(np.argmax(f.action)) for _, f in pairs]
    timed = [(c.seconds, f.seconds) for c, f in pairs if f.seconds is not None]
    out = {
        f"hr@{K}": metrics.hit_rate(ranks, K),
        f"ndcg@{K}": metrics.ndcg(ranks, K),
        f"mrr@{K}": metrics.mrr(ranks, K),
        "action_accuracy": metrics.accuracy(y_true, y_pred),
        "action_macro_f1": metrics.macro_f1(y_true, y_pred),
        "purchase_auc": metrics.roc_auc([c.purchase for c, _ in pairs],
                                        [f.purchase for _, f in pairs]),
        "time_mae_s": metrics.median_absolute_error([t for t, _ in timed],
                                                    [p for _, p in timed]),
        "n": len(pairs),
        "n_with_item": len(with_item),
    }
    return {k: _json_number(v) for k, v in out.items()}


def _json_number(value: float | int) -> float | int | None:
    # NaN is not JSON: a metric that cannot be computed (one class only, no cases) is null.
    if isinstance(value, float):
        return None if math.isnan(value) else round(value, 6)
    return value


def model_forecasts(bundle: Bundle, cases: Sequence[Case], *, threads: int = 1,
                    batch_size: int = 256) -> list[Forecast]:
    """Run the bundle's ONNX model through the serving scorer on each case's window."""
    from streams.scorer import Scorer  # onnxruntime is heavy; import on use

    scorer = Scorer(bundle, top_k=bundle.top_k, threads=threads)
    ids = np.array([""] * 3 + bundle.items.tokens, dtype=object)
    out: list[Forecast] = []
    for start in range(0, len(cases), batch_size):
        chunk = cases[start: start + batch_size]
        s = scorer.score([c.window for c in chunk])
        for row in range(len(chunk)):
            out.append(Forecast(list(ids.take(s.top_items[row])), s.next_action[row],
                                float(s.purchase_probability[row]),
                                float(s.next_event_seconds[row])))
    return out


def by_history_length(cases: Sequence[Case], predictors: dict[str, Sequence[Forecast | None]]
                      ) -> list[dict[str, Any]]:
    """ndcg@10 and action accuracy of each predictor for each window-length bucket."""
    rows = []
    for lo, hi in LENGTH_BUCKETS:
        picked = [i for i, c in enumerate(cases) if lo <= c.history_length <= hi]
        if not picked:
            continue
        row: dict[str, Any] = {"history": f"{lo}-{hi}" if hi < 10_000 else f"{lo}+",
                               "n": len(picked)}
        for name, forecasts in predictors.items():
            m = score([cases[i] for i in picked], [forecasts[i] for i in picked])
            row[name] = {f"ndcg@{K}": m[f"ndcg@{K}"], "action_accuracy": m["action_accuracy"]}
        rows.append(row)
    return rows


def check_targets(model: dict[str, Any], baselines: dict[str, dict[str, Any]]
                  ) -> list[dict[str, Any]]:
    """The acceptance targets, each with the measured values and whether it is met."""
    key = f"ndcg@{K}"
    checks = []

    def add(name: str, ok: bool, detail: str) -> None:
        checks.append({"target": name, "met": bool(ok), "detail": detail})

    ndcg = model.get(key) or 0.0
    for base, factor, label in (("markov", TARGET_VS_MARKOV, "at least 1.1x markov"),
                                ("popular", TARGET_VS_POPULAR, "far above popular (>= 2x)"),
                                ("oracle", TARGET_VS_ORACLE, "at least 90% of the oracle")):
        if base not in baselines:
            continue
        ref = baselines[base].get(key) or 0.0
        ratio = ndcg / ref if ref else float("inf")
        add(f"{key} {label}", ndcg >= factor * ref,
            f"model {ndcg:.4f} vs {base} {ref:.4f} (ratio {ratio:.3f}, needs {factor:g})")
    acc, pop = model.get("action_accuracy") or 0.0, baselines["popular"].get("action_accuracy")
    add("action_accuracy above popular", acc > (pop or 0.0),
        f"model {acc:.4f} vs popular {pop if pop is None else round(pop, 4)}")
    return checks


def evaluate(bundle: Bundle, log: EventLog, *, oracle: Path | str | None = None,
             threads: int = 1, data: Prepared | None = None,
             by_segment: bool = False) -> dict[str, Any]:
    """The full evaluation report of a bundle on a log's test split (each user's last event).

    With ``by_segment`` the report also has a ``segments`` section
    (:func:`model_export.fairness.segment_report`): metrics per user segment,
    popularity bias and catalogue coverage.
    """
    if data is None:
        data = prepare(log, bundle.spec,
                       ttl_seconds=int(bundle.manifest.get("window_ttl_seconds", 2592000)),
                       horizon_seconds=bundle.horizon_seconds,
                       vocabularies=(bundle.items, bundle.categories))
    cases = held_out_cases(data, "test")
    if not cases:
        raise ValueError("the log has no user with at least three events, so there is no "
                         "test split to evaluate on")
    forecasts: dict[str, Sequence[Forecast | None]] = {
        "model": model_forecasts(bundle, cases, threads=threads)}
    fitted: dict[str, Callable[[Case], Forecast | None]] = {
        "popular": Popular(data, bundle.top_k).forecast,
        "markov": Markov(data, bundle.top_k).forecast}
    if oracle is not None:
        fitted["oracle"] = Oracle(oracle).forecast
    for name, predict in fitted.items():
        forecasts[name] = [predict(c) for c in cases]
    results = {name: score(cases, f) for name, f in forecasts.items()}
    baselines = {name: results[name] for name in fitted}
    unknown = sum(1 for c in cases if c.next_item_id is not None
                  and bundle.items.index(c.next_item_id) == 2)
    report: dict[str, Any] = {
        "model": results["model"],
        "baselines": baselines,
        "n_test": len(cases),
        "split": "test: each user's last event, predicted from the window before it",
        "unknown_target_items": unknown,
        "by_history_length": by_history_length(cases, forecasts),
        "targets": check_targets(results["model"], baselines),
    }
    report["shortfalls"] = [f"NOT MET: {c['target']}: {c['detail']}"
                            for c in report["targets"] if not c["met"]]
    if by_segment:
        from model_export.fairness import segment_report  # it builds on score() above

        report["segments"] = segment_report(data, cases, forecasts)
    return report


def format_table(report: dict[str, Any]) -> str:
    """A human-readable table of the report: one row per predictor, then the targets."""
    names = ["model", *report["baselines"]]
    rows = [report["model"], *report["baselines"].values()]
    cols = [f"hr@{K}", f"ndcg@{K}", f"mrr@{K}", "action_accuracy", "action_macro_f1",
            "purchase_auc", "time_mae_s", "n"]
    width = max(len(c) for c in cols) + 1
    lines = ["".ljust(10) + "".join(c.rjust(width) for c in cols)]
    for name, row in zip(names, rows, strict=True):
        cells = []
        for c in cols:
            v = row.get(c)
            cells.append(("-" if v is None else f"{v:.4f}" if isinstance(v, float)
                          else str(v)).rjust(width))
        lines.append(name.ljust(10) + "".join(cells))
    lines.append(f"test cases: {report['n_test']} (one per user with >= 3 events); "
                 f"target items never seen in training: {report.get('unknown_target_items', 0)}")
    for check in report.get("targets", []):
        lines.append(f"{'met    ' if check['met'] else 'NOT MET'}  {check['target']}: "
                     f"{check['detail']}")
    return "\n".join(lines)


def plot_by_history_length(report: dict[str, Any], path: Path | str) -> Path:
    """A PNG of ndcg@10 and action accuracy by window length, one line per predictor."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = report["by_history_length"]
    labels = [f"{r['history']}\n(n={r['n']})" for r in rows]
    names = ["model", *report["baselines"]]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, metric in zip(axes, (f"ndcg@{K}", "action_accuracy"), strict=True):
        for name in names:
            ys = [r[name][metric] if name in r else None for r in rows]
            ax.plot(range(len(rows)), [np.nan if y is None else y for y in ys], marker="o",
                    label=name)
        ax.set_xticks(range(len(rows)), labels)
        ax.set_xlabel("events in the window")
        ax.set_title(f"{metric} by history length (test split)")
        ax.grid(alpha=0.3)
    axes[0].legend()
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path
