"""The fairness report: segments, popularity bias and coverage by hand; the CLI's JSON."""

import numpy as np
import orjson
import pytest

from model_export import fairness
from model_export.baselines import Forecast, Markov, Popular
from model_export.data import EventLog, held_out_cases, prepare
from streams.contracts import event_from_dict
from streams.encoding import EncodingSpec

FAR = 4_102_444_800_000
T0 = 1_764_000_000_000  # 16:00 UTC, so a few minutes later is still the same day
MINUTE, DAY = 60_000, 86_400_000
CATEGORY = {"a": "shoes", "b": "lamps", "c": "mugs", "d": "toys"}


def shop_log():
    """Four users; each history ends with (validation, test) events.

    u0: a x6, b x4 in one visit, then c, a          -> new, long window, shoes, 10/day
    u1: b, c, a day later b, then c, b              -> returning, short, lamps, 3 in 2 days
    u2: a, c in one visit, then a, c                -> new, short, shoes (tie: first seen), 2/day
    u3: d, then a new session: a, d                 -> returning, short, toys (other), 1/day
    Training items: a 7, b 6, c 2, d 1 -> the top 1% of four items is {a}.
    """
    histories = {
        "u0": [(i * MINUTE, "a" if i < 6 else "b", "s0") for i in range(10)]
        + [(10 * MINUTE, "c", "s0"), (11 * MINUTE, "a", "s0")],
        "u1": [(0, "b", None), (MINUTE, "c", None), (DAY, "b", None), (DAY + MINUTE, "c", None),
               (DAY + 2 * MINUTE, "b", None)],
        "u2": [(0, "a", "s2"), (MINUTE, "c", "s2"), (2 * MINUTE, "a", "s2"),
               (3 * MINUTE, "c", "s2")],
        "u3": [(0, "d", "s3a"), (MINUTE, "a", "s3b"), (2 * MINUTE, "d", "s3b")],
    }
    rows = []
    for user, events in histories.items():
        for n, (dt, item, session) in enumerate(events):
            row = {"event_id": f"{user}-{n}", "user_id": user, "type": "click", "ts": T0 + dt,
                   "item_id": item, "category": CATEGORY[item]}
            if session:
                row["session_id"] = session
            rows.append(row)
    return EventLog([event_from_dict(r, now_ms=FAR) for r in rows], "0" * 64, len(rows))


@pytest.fixture()
def shop():
    data = prepare(shop_log(), EncodingSpec(max_len=20))
    cases = sorted(held_out_cases(data, "test"), key=lambda c: c.user.user_id)
    return data, cases


def test_segments_are_assigned_from_training_and_the_window(shop):
    data, cases = shop
    segmenter = fairness.Segmenter.fit(data, top=2)
    assert segmenter.top_categories == ("shoes", "lamps")
    # rates 10, 1.5, 2, 1 -> sorted 1, 1.5, 2, 10: tertiles (linear) at 1.5 and 2
    assert segmenter.activity_cuts == pytest.approx((1.5, 2.0))
    got = {c.user.user_id: segmenter.assign(c) for c in cases}
    assert {u: g["new_vs_returning"] for u, g in got.items()} == {
        "u0": "new", "u1": "returning", "u2": "new", "u3": "returning"}
    assert {u: g["history_length"] for u, g in got.items()} == {
        "u0": "long", "u1": "short", "u2": "short", "u3": "short"}
    assert {u: g["main_category"] for u, g in got.items()} == {
        "u0": "shoes", "u1": "lamps", "u2": "shoes", "u3": "other"}
    assert {u: g["activity_level"] for u, g in got.items()} == {
        "u0": "high", "u1": "low", "u2": "medium", "u3": "low"}


def test_a_session_change_alone_makes_a_returning_user(shop):
    _, cases = shop
    u3 = cases[3]
    assert u3.user.user_id == "u3" and fairness.is_returning(u3)
    assert max(e.ts_ms for e in u3.user.events) - min(e.ts_ms for e in u3.user.events) \
        < fairness.VISIT_GAP_MS


def test_popularity_bias_and_coverage_by_hand(shop):
    data, cases = shop
    popular = fairness.popular_items(data)
    assert popular == {"a"}
    action = np.full(5, 0.2)
    always_a = [Forecast(["a", "b"], action, 0.0, None) for _ in cases]
    varied = [Forecast(["b", "c"], action, 0.0, None), Forecast(["c", "d"], action, 0.0, None),
              Forecast(["b", "", "a"], action, 0.0, None), None]
    predictors = {"always_a": always_a, "varied": varied}
    bias = fairness.popularity_bias(cases, predictors, popular, k=2)
    # test targets a, b, c, d: one in four is popular
    assert bias["actual_share"] == pytest.approx(0.25)
    assert bias["always_a"] == {"recommended_share": 0.5, "ratio": 2.0}
    # varied fills 5 slots (the reserved "" is no item; "a" is past k=2): none popular
    assert bias["varied"] == {"recommended_share": 0.0, "ratio": 0.0}
    cover = fairness.coverage(predictors, len(data.items.tokens), k=2)
    assert cover["catalogue_size"] == 4
    assert cover["always_a"] == {"distinct_items": 2, "coverage": 0.5}
    assert cover["varied"] == {"distinct_items": 3, "coverage": 0.75}


def test_segment_report_scores_every_segment_of_every_group(shop):
    data, cases = shop
    predictors = {"popular": [Popular(data).forecast(c) for c in cases],
                  "markov": [Markov(data).forecast(c) for c in cases]}
    section = fairness.segment_report(data, cases, predictors)
    for group in ("new_vs_returning", "history_length", "main_category", "activity_level"):
        assert sum(row["n"] for row in section[group]) == len(cases)
        assert group in section["definitions"]
    new = section["new_vs_returning"][0]
    assert new["segment"] == "new" and new["n"] == 2
    # popular ranks a first for everyone; the new users' targets are a (u0) and c (u2)
    assert new["popular"]["hr@10"] == 1.0 and new["popular"]["ndcg@10"] == pytest.approx(
        (1 + 1 / 2) / 2)  # a at rank 0, c at rank 2 -> 1/log2(4) = 1/2
    assert section["coverage"]["popular"]["distinct_items"] == 4
    table = fairness.format_segments(section)
    assert "[activity_level]" in table and "returning" in table and "coverage" in table


def test_cli_json_has_a_segments_section(tiny_bundle, tiny_log, tmp_path, capsys):
    from streams.cli import main

    png = tmp_path / "segments.png"
    code = main(["evaluate", str(tiny_bundle), str(tiny_log), "--by-segment", "--json",
                 "--plot", "-", "--segment-plot", str(png), "--threads", "1"])
    assert code == 0
    out = orjson.loads(capsys.readouterr().out)
    segments = out["segments"]
    for group in ("new_vs_returning", "history_length", "main_category", "activity_level"):
        rows = segments[group]
        assert sum(r["n"] for r in rows) == out["n_test"]
        assert {"model", "popular", "markov"} <= set(rows[0])
    assert [r["segment"] for r in segments["new_vs_returning"]] == ["new", "returning"]
    assert [r["segment"] for r in segments["activity_level"]] == ["low", "medium", "high"]
    assert segments["main_category"][-1]["segment"] == "other"
    assert 0 < segments["coverage"]["model"]["coverage"] <= 1
    assert segments["popularity_bias"]["popular"]["recommended_share"] is not None
    assert png.stat().st_size > 0
