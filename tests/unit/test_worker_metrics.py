"""Worker metrics and online accuracy without a broker: names, values, exposition format."""

from __future__ import annotations

import shutil
import subprocess

import numpy as np
import pytest
from prometheus_client import CollectorRegistry, Histogram, generate_latest

from streams.contracts import ACTION_INDEX, ACTIONS, REASONS, Event
from streams.metrics import (
    PROBABILITY_BUCKETS,
    WorkerMetrics,
    observe_all,
    probability_bucket,
)
from streams.online import HIT_AT, OnlineAccuracy

HOUR_MS = 3_600_000


def sample(metrics: WorkerMetrics, name: str, **labels: str) -> float:
    value = metrics.registry.get_sample_value(name, labels)
    return 0.0 if value is None else value


def event(user: str, kind: str, ts_ms: int, n: int = 0) -> Event:
    return Event(event_id=f"{user}-{n}", user_id=user, type=kind, ts_ms=ts_ms,
                 item_id="sku-1" if kind != "search" else None, query="q" if kind == "search"
                 else None)


def scores(items: list[list[int]], action: str, purchase: float):
    """Model outputs for len(items) rows: top items, a one-hot next action, P(purchase)."""
    top = np.array([row + [0] * (20 - len(row)) for row in items], dtype=np.int64)
    next_action = np.zeros((len(items), len(ACTIONS)), dtype=np.float32)
    next_action[:, ACTION_INDEX[action]] = 1.0
    return top, next_action, np.full(len(items), purchase, dtype=np.float32)


def test_names_follow_prometheus_conventions():
    metrics = WorkerMetrics()
    families = {m.name: m for m in metrics.registry.collect()}
    for name, family in families.items():
        assert name.startswith("shopcast_"), name
        assert name == name.lower(), name
        for s in family.samples:
            if family.type == "counter":
                assert s.name.endswith("_total"), s.name
            assert not s.name.endswith("_created"), "created series are disabled"
    for name in ("shopcast_inference_seconds", "shopcast_event_to_prediction_seconds",
                 "shopcast_append_to_prediction_seconds", "shopcast_batch_size_events",
                 "shopcast_window_length_events"):
        assert families[name].type == "histogram"
    assert families["shopcast_model"].type == "info"
    assert families["shopcast_consumer_lag_messages"].type == "gauge"


def test_labelled_series_exist_at_zero_from_the_start():
    # rate() and alerts over a reason or type work before its first occurrence.
    metrics = WorkerMetrics()
    for reason in REASONS:
        assert metrics.registry.get_sample_value("shopcast_dead_letters_total",
                                                 {"reason": reason}) == 0.0
    for action in ACTIONS:
        assert metrics.registry.get_sample_value("shopcast_events_total", {"type": action}) == 0
    for bucket in PROBABILITY_BUCKETS:
        assert metrics.registry.get_sample_value("shopcast_online_purchase_expected_total",
                                                 {"bucket": bucket}) == 0.0


def test_model_info_lag_and_latency():
    metrics = WorkerMetrics()
    metrics.set_model("v1", "2026-11-29T06:00:00Z", 86400)
    assert sample(metrics, "shopcast_model_info", version="v1",
                  created_at="2026-11-29T06:00:00Z", horizon_seconds="86400") == 1.0
    metrics.set_lag([("events", 0, 5), ("events", 1, -3)])
    assert sample(metrics, "shopcast_consumer_lag_messages", topic="events", partition="0") == 5
    assert sample(metrics, "shopcast_consumer_lag_messages", topic="events", partition="1") == 0
    metrics.set_lag([("events", 1, 2)])  # partition 0 was revoked: its series goes away
    assert metrics.registry.get_sample_value("shopcast_consumer_lag_messages",
                                             {"topic": "events", "partition": "0"}) is None
    metrics.observe_sent(1000.0, [999_500, 990_000], [999_990, None])
    assert sample(metrics, "shopcast_event_to_prediction_seconds_count") == 2
    assert sample(metrics, "shopcast_event_to_prediction_seconds_sum") == pytest.approx(10.5)
    assert sample(metrics, "shopcast_append_to_prediction_seconds_count") == 1  # None skipped
    assert sample(metrics, "shopcast_append_to_prediction_seconds_sum") == pytest.approx(0.01)


def test_observe_all_equals_one_observe_per_amount():
    amounts = [0.0, 0.005, 0.0051, 0.02, 0.5, 1.0, 7.5, 10_000.0] + [0.01] * 5
    one_by_one, at_once = (CollectorRegistry(), CollectorRegistry())
    single = Histogram("h", "latency", registry=one_by_one, buckets=(0.005, 0.01, 0.5, 1.0))
    bulk = Histogram("h", "latency", registry=at_once, buckets=(0.005, 0.01, 0.5, 1.0))
    for amount in amounts:
        single.observe(amount)
    observe_all(bulk, amounts)
    observe_all(bulk, [])
    assert generate_latest(at_once) == generate_latest(one_by_one)


@pytest.mark.parametrize(("p", "bucket"), [(0.0, "0.1"), (0.1, "0.1"), (0.1001, "0.2"),
                                            (0.55, "0.6"), (1.0, "1.0"), (1.5, "1.0")])
def test_probability_bucket_is_the_upper_bound(p, bucket):
    assert probability_bucket(p) == bucket


def test_online_hit_at_10_and_action_accuracy():
    metrics = WorkerMetrics()
    online = OnlineAccuracy(metrics, horizon_ms=24 * HOUR_MS)
    t0 = 1_764_400_000_000
    # First events: nothing to score yet. u1's prediction has item 7 at rank 10 (a hit),
    # u2's has item 7 at rank 11 (a miss).
    top, action, purchase = scores([list(range(3, 13)), list(range(20, 30)) + [7]], "click",
                                   0.05)
    online.observe([event("u1", "browse", t0), event("u2", "browse", t0)], [3, 3], top,
                   action, purchase)
    assert sample(metrics, "shopcast_online_action_predictions_total") == 0
    assert 12 - 3 + 1 == HIT_AT
    # Next events: u1 clicks item 12 (in its top 10), u2 clicks item 7 (11th) and an unknown
    # item is not scored for hit@10 (index 2) but is for the action.
    top, action, purchase = scores([[3], [3], [3]], "browse", 0.05)
    online.observe([event("u1", "click", t0 + 1000, 1), event("u2", "click", t0 + 1000, 1),
                    event("u2", "search", t0 + 2000, 2)], [12, 7, 1], top, action, purchase)
    assert sample(metrics, "shopcast_online_item_predictions_total") == 2
    assert sample(metrics, "shopcast_online_item_hits_total") == 1
    assert sample(metrics, "shopcast_online_action_predictions_total") == 3
    # The first two were predicted "click" (right); the third was predicted "browse" (wrong).
    assert sample(metrics, "shopcast_online_action_correct_total") == 2


def test_purchase_calibration_counts_outcomes_and_expected_purchases():
    metrics = WorkerMetrics()
    online = OnlineAccuracy(metrics, horizon_ms=24 * HOUR_MS)
    t0 = 1_764_400_000_000
    top, action, _ = scores([[3]], "click", 0.0)

    def step(user, kind, ts, p, n):
        online.observe([event(user, kind, ts, n)], [3], top, action, np.array([p], np.float32))

    step("buyer", "browse", t0, 0.35, 0)
    step("buyer", "click", t0 + HOUR_MS, 0.9, 1)      # within the horizon: still open
    step("buyer", "purchase", t0 + 2 * HOUR_MS, 0.1, 2)  # the 0.35 prediction comes true
    step("idle", "browse", t0, 0.15, 0)
    step("idle", "browse", t0 + 25 * HOUR_MS, 0.15, 1)  # horizon passed without a purchase
    assert sample(metrics, "shopcast_online_purchase_outcomes_total", bucket="0.4",
                  outcome="purchase") == 1
    assert sample(metrics, "shopcast_online_purchase_outcomes_total", bucket="0.2",
                  outcome="none") == 1
    assert sample(metrics, "shopcast_online_purchase_expected_total",
                  bucket="0.4") == pytest.approx(0.35)
    assert sample(metrics, "shopcast_online_purchase_expected_total",
                  bucket="0.2") == pytest.approx(0.15)


@pytest.mark.prometheus
def test_exposition_passes_promtool():
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool not installed (Debian package 'prometheus'; .ci/tools.sh)")
    metrics = WorkerMetrics()
    metrics.set_model("v1", "2026-11-29T06:00:00Z", 86400)
    metrics.set_lag([("shop.events", 0, 3)])
    metrics.batch_size.observe(4)
    metrics.inference.observe(0.002)
    result = subprocess.run([promtool, "check", "metrics"], input=generate_latest(
        metrics.registry), capture_output=True, timeout=60, check=False)
    assert result.returncode == 0, (result.stdout + result.stderr).decode()
    assert not (result.stdout + result.stderr).strip(), "promtool reported lint problems"
