"""Metrics against hand-computed values; baselines on a toy log; the report's targets."""

import math

import numpy as np
import pytest

from model_export import metrics
from model_export.baselines import Forecast, Markov, Oracle, Popular
from model_export.data import EventLog, held_out_cases, prepare
from model_export.evaluate import check_targets, score
from streams.contracts import event_from_dict
from streams.encoding import EncodingSpec

FAR = 4_102_444_800_000
T0 = 1_764_000_000_000


def test_ranking_metrics_by_hand():
    ranks = [0, 1, 9, 10, None]
    assert metrics.hit_rate(ranks, 10) == pytest.approx(3 / 5)
    assert metrics.ndcg(ranks, 10) == pytest.approx((1 + 1 / math.log2(3) + 1 / math.log2(11)) / 5)
    assert metrics.mrr(ranks, 10) == pytest.approx((1 + 1 / 2 + 1 / 10) / 5)
    assert metrics.rank_of("b", ["a", "b", "c"]) == 1 and metrics.rank_of("z", ["a"]) is None


def test_accuracy_and_macro_f1_by_hand():
    y_true, y_pred = [0, 0, 1, 1, 2], [0, 1, 1, 1, 0]
    assert metrics.accuracy(y_true, y_pred) == pytest.approx(3 / 5)
    # class 0: tp 1 fp 1 fn 1 -> 0.5; class 1: tp 2 fp 1 fn 0 -> 0.8; class 2: 0
    assert metrics.macro_f1(y_true, y_pred) == pytest.approx((0.5 + 0.8 + 0.0) / 3)
    assert metrics.macro_f1([3, 3], [3, 3]) == 1.0


def test_auc_by_hand_with_ties():
    assert metrics.roc_auc([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]) == pytest.approx(0.75)
    assert metrics.roc_auc([0, 1], [0.5, 0.5]) == pytest.approx(0.5)
    assert metrics.roc_auc([0, 1, 1], [0.2, 0.2, 0.9]) == pytest.approx(0.75)
    assert math.isnan(metrics.roc_auc([1, 1], [0.2, 0.3]))


def test_median_absolute_error_by_hand():
    assert metrics.median_absolute_error([10, 20, 30], [12, 10, 30]) == pytest.approx(2.0)
    assert math.isnan(metrics.median_absolute_error([], []))


def toy_log():
    """Three users walk a -> b -> c; the test target after b is c, after a it is b."""
    rows = []
    for u, path in enumerate([["a", "b", "c", "a", "b", "c"], ["a", "b", "a", "b"],
                              ["c", "a", "b", "c", "a", "b", "c"]]):
        for i, item in enumerate(path):
            kind = "purchase" if item == "c" else "click"
            rows.append({"event_id": f"{u}-{i}", "user_id": f"u{u}", "type": kind,
                         "ts": T0 + i * 60_000, "item_id": item})
    return EventLog([event_from_dict(r, now_ms=FAR) for r in rows], "0" * 64, len(rows))


def test_popular_and_markov_on_a_toy_log():
    data = prepare(toy_log(), EncodingSpec(max_len=10))
    cases = held_out_cases(data, "test")
    popular, markov = Popular(data), Markov(data)
    # training parts: u0 a b c a, u1 a b, u2 c a b c a -> a x5, b x3, c x3
    assert popular.ranking == ["a", "b", "c"]
    assert markov.items["a"].most_common(1) == [("b", 3)]
    by_user = {c.user.user_id: c for c in cases}
    assert markov.forecast(by_user["u0"]).items[0] == "c"  # after b comes c
    assert markov.forecast(by_user["u1"]).items[0] == "b"  # after a comes b
    m, p = score(cases, [markov.forecast(c) for c in cases]), score(cases, [popular.forecast(c)
                                                                               for c in cases])
    assert m["hr@10"] == 1.0 and m["ndcg@10"] == pytest.approx(1.0)
    assert p["ndcg@10"] < m["ndcg@10"]
    assert p["purchase_auc"] == 0.5  # a constant predictor ranks nothing
    # after a click, training saw 3 clicks and 2 purchases: markov says click; 1 of 3 is right
    assert m["action_accuracy"] == pytest.approx(1 / 3)


def test_oracle_is_scored_like_a_model(tmp_path):
    data = prepare(toy_log(), EncodingSpec(max_len=10))
    cases = held_out_cases(data, "test")
    lines = []
    for c in cases:
        target = c.user.events[c.t + 1]
        lines.append(f'{{"user_id": "{target.user_id}", "event_id": "{target.event_id}", '
                     f'"next_action": {{"click": 0.9, "purchase": 0.1}}, '
                     f'"next_items": [{{"item_id": "zz", "p": 0.2}}, '
                     f'{{"item_id": "{target.item_id}", "p": 0.5}}], '
                     f'"purchase_probability": 0.3}}')
    (tmp_path / "oracle.jsonl").write_text("\n".join(lines))
    oracle = Oracle(tmp_path / "oracle.jsonl")
    result = score(cases, [oracle.forecast(c) for c in cases])
    assert result["hr@10"] == 1.0 and result["mrr@10"] == 1.0  # sorted by p, target first
    assert result["time_mae_s"] is None and result["n"] == len(cases)


def test_targets_say_plainly_what_is_not_met():
    base = {"popular": {"ndcg@10": 0.05, "action_accuracy": 0.5},
            "markov": {"ndcg@10": 0.20, "action_accuracy": 0.6},
            "oracle": {"ndcg@10": 0.30}}
    checks = check_targets({"ndcg@10": 0.21, "action_accuracy": 0.55}, base)
    met = {c["target"]: c["met"] for c in checks}
    assert met == {"ndcg@10 at least 1.1x markov": False,
                   "ndcg@10 far above popular (>= 2x)": True,
                   "ndcg@10 at least 90% of the oracle": False,
                   "action_accuracy above popular": True}


def test_score_skips_cases_without_a_forecast():
    data = prepare(toy_log(), EncodingSpec(max_len=10))
    cases = held_out_cases(data, "test")
    f = Forecast(["c"], np.array([0, 0, 1, 0, 0.0]), 0.5, 1.0)
    result = score(cases, [f] + [None] * (len(cases) - 1))
    assert result["n"] == 1
