"""The worker's live funnel and zero-click-search counters, on windows built by the pipeline."""

from __future__ import annotations

import orjson

from streams.encoding import Encoder, EncodingSpec, Vocabulary, record_dtype
from streams.metrics import ACTION_OFFSET, WorkerMetrics
from streams.pipeline import Incoming, Pipeline, Ready

NOW = 1_764_400_000_000
DAY_MS = 86_400_000


def admitted(kinds: list[tuple[str, str]]) -> list[Ready]:
    """Admit ``(user, type)`` events in order; the Ready objects the scorer would get."""
    encoder = Encoder(EncodingSpec(), Vocabulary(["sku-1"]), Vocabulary(["shoes"]))
    pipeline = Pipeline(encoder, window_length=50, ttl_ms=DAY_MS, max_future_ms=DAY_MS)
    table: dict[bytes, bytes] = {}
    out = []
    for n, (user, kind) in enumerate(kinds):
        event = {"event_id": f"e-{n}", "user_id": user, "type": kind, "ts": NOW - 10_000 + n}
        if kind == "search":
            event["query"] = "red shoes"
        elif kind == "browse":
            event["category"] = "shoes"
        else:
            event["item_id"] = "sku-1"
        ready = pipeline.admit(Incoming(user.encode(), orjson.dumps(event), "shop.events", 0, n),
                               table, now_ms=NOW)
        assert isinstance(ready, Ready)
        out.append(ready)
    return out


def value(metrics: WorkerMetrics, name: str, **labels: str) -> float:
    return metrics.registry.get_sample_value(name, labels) or 0.0


def test_action_offset_matches_the_record_layout():
    assert record_dtype(EncodingSpec()).fields["action"][1] == ACTION_OFFSET


def test_funnel_steps_and_zero_click_searches_are_counted_per_batch():
    ready = admitted([
        ("a", "search"), ("a", "click"),        # a search that found something
        ("b", "search"), ("b", "search"),       # zero-click (then a second search ...)
        ("a", "add_to_cart"), ("b", "browse"),  # ... also zero-click; interleaved users
        ("a", "purchase"), ("c", "search"),     # c's search has no next event yet
    ])
    metrics = WorkerMetrics()
    metrics.observe_admitted(ready[:3])
    metrics.observe_admitted(ready[3:])
    steps = {s: value(metrics, "shopcast_funnel_events_total", step=s)
             for s in ("browse", "click", "add_to_cart", "purchase")}
    assert steps == {"browse": 5, "click": 1, "add_to_cart": 1, "purchase": 1}
    assert value(metrics, "shopcast_searches_followed_total") == 3
    assert value(metrics, "shopcast_zero_click_searches_total") == 2


def test_redeliveries_are_not_counted_twice():
    ready = admitted([("a", "search"), ("a", "browse")])
    metrics = WorkerMetrics()
    metrics.observe_admitted(ready)
    redelivered = Ready(ready[1].event, ready[1].records, True, ready[1].window_length,
                        ready[1].source, ready[1].item_index)
    metrics.observe_admitted([redelivered])
    assert value(metrics, "shopcast_funnel_events_total", step="browse") == 2
    assert value(metrics, "shopcast_zero_click_searches_total") == 1
    assert value(metrics, "shopcast_events_total", type="browse") == 2  # the scored count
