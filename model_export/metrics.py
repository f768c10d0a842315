"""Evaluation metrics, written out so each can be checked by hand.

Item metrics take the 0-based rank of the true next item in a full ranking of
the catalogue (``None`` when it is not in the ranked list at all), never a rank
among sampled negatives.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np


def hit_rate(ranks: Sequence[int | None], k: int = 10) -> float:
    """Share of targets ranked in the top ``k``."""
    return _mean([1.0 if r is not None and r < k else 0.0 for r in ranks])


def ndcg(ranks: Sequence[int | None], k: int = 10) -> float:
    """Normalised discounted cumulative gain at ``k`` with one relevant item: 1/log2(rank + 2)."""
    return _mean([1.0 / math.log2(r + 2) if r is not None and r < k else 0.0 for r in ranks])


def mrr(ranks: Sequence[int | None], k: int = 10) -> float:
    """Mean reciprocal rank, counting only targets in the top ``k``."""
    return _mean([1.0 / (r + 1) if r is not None and r < k else 0.0 for r in ranks])


def rank_of(target: str | None, ranked: Sequence[str | None]) -> int | None:
    """0-based position of ``target`` in a ranked list of ids, or None if absent."""
    if target is None:
        return None
    for i, item in enumerate(ranked):
        if item == target:
            return i
    return None


def accuracy(y_true: Sequence[int], y_pred: Sequence[int]) -> float:
    """Share of exact predictions."""
    return _mean([1.0 if t == p else 0.0 for t, p in zip(y_true, y_pred, strict=True)])


def macro_f1(y_true: Sequence[int], y_pred: Sequence[int]) -> float:
    """F1 averaged over the classes that occur in the truth or the predictions.

    A class that is never predicted scores F1 = 0, which is what makes a
    constant predictor look as bad as it is.
    """
    labels = sorted(set(y_true) | set(y_pred))
    if not labels:
        return float("nan")
    scores = []
    for c in labels:
        tp = sum(1 for t, p in zip(y_true, y_pred, strict=True) if t == c and p == c)
        fp = sum(1 for t, p in zip(y_true, y_pred, strict=True) if t != c and p == c)
        fn = sum(1 for t, p in zip(y_true, y_pred, strict=True) if t == c and p != c)
        scores.append(2 * tp / (2 * tp + fp + fn) if tp else 0.0)
    return float(np.mean(scores))


def roc_auc(labels: Sequence[int], scores: Sequence[float]) -> float:
    """Area under the ROC curve (Mann-Whitney U; ties count one half). NaN with one class."""
    y = np.asarray(labels, dtype=np.int64)
    s = np.asarray(scores, dtype=np.float64)
    n_pos = int((y == 1).sum())
    n_neg = int((y == 0).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = np.argsort(s, kind="mergesort")
    ranks = np.empty(len(s), dtype=np.float64)
    sorted_s = s[order]
    i = 0
    while i < len(s):  # average ranks over ties
        j = i
        while j + 1 < len(s) and sorted_s[j + 1] == sorted_s[i]:
            j += 1
        ranks[order[i: j + 1]] = (i + j) / 2.0 + 1.0
        i = j + 1
    u = ranks[y == 1].sum() - n_pos * (n_pos + 1) / 2.0
    return float(u / (n_pos * n_neg))


def median_absolute_error(y_true: Sequence[float], y_pred: Sequence[float]) -> float:
    """Median of |prediction - truth| (seconds for the time head)."""
    if len(y_true) == 0:
        return float("nan")
    diff = np.abs(np.asarray(y_pred, dtype=np.float64) - np.asarray(y_true, dtype=np.float64))
    return float(np.median(diff))


def _mean(values: list[float]) -> float:
    return float(np.mean(values)) if values else float("nan")
