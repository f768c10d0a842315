"""Prometheus metrics of a worker, served at ``/metrics``.

Names follow Prometheus conventions: ``shopcast_`` prefix, base units,
``_total`` for counters (prometheus-client adds the suffix).

One :class:`WorkerMetrics` per process, on its own registry so tests can run
several without clashes. The worker calls the ``observe_*`` methods; nothing
here knows about Faust.
"""

from __future__ import annotations

from bisect import bisect_left
from collections import Counter as Tally
from collections.abc import Iterable, Sequence
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    disable_created_metrics,
    start_http_server,
)

from streams.contracts import ACTION_INDEX, ACTIONS, REASONS
from streams.encoding import EncodingSpec, record_dtype

# Latency buckets from 1 ms to a minute: p50/p99 of a healthy worker sit in the
# low milliseconds, a lagging one in seconds.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                   10.0, 30.0, 60.0)
# Event time can trail far behind: apps that buffer offline send events minutes or hours late.
# How late is worth seeing, so this histogram goes on to a day.
EVENT_TIME_BUCKETS = (*LATENCY_BUCKETS, 300.0, 900.0, 3600.0, 6 * 3600.0, 86400.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
WINDOW_BUCKETS = (1, 2, 5, 10, 20, 30, 40, 49, 50, 100, 255)
# ``*_created`` series double the output and no dashboard or alert uses them.
disable_created_metrics()

# Funnel steps of the live counters: a search is looking around too, so it counts as browse
# (as in the offline report, shopcast analyze, where every visit browses).
FUNNEL_STEP = {"browse": "browse", "search": "browse", "click": "click",
               "add_to_cart": "add_to_cart", "purchase": "purchase"}
# Byte offset of the action inside a window record (streams.encoding.record_dtype). The
# stored action is ACTION_INDEX + 1 (0 is padding).
ACTION_OFFSET = record_dtype(EncodingSpec()).fields["action"][1]  # type: ignore[index]
SEARCH_CODE = ACTION_INDEX["search"] + 1
CLICK = "click"

PROBABILITY_BUCKETS = ("0.1", "0.2", "0.3", "0.4", "0.5", "0.6", "0.7", "0.8", "0.9", "1.0")


class WorkerMetrics:
    """Every metric a worker exports."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.events = Counter("shopcast_events", "Valid events consumed, by event type.",
                              ["type"], registry=r)
        self.dead_letters = Counter("shopcast_dead_letters",
                                    "Records sent to the dead-letter topic, by reason.",
                                    ["reason"], registry=r)
        self.predictions = Counter("shopcast_predictions", "Predictions sent.", registry=r)
        self.duplicates = Counter("shopcast_duplicate_events",
                                  "Redelivered events (already in the window): scored again, "
                                  "not added again.", registry=r)
        self.rekeyed = Counter("shopcast_rekeyed_events",
                               "Events whose Kafka key was not their user id, re-sent keyed "
                               "by user.", registry=r)
        self.stepped = Counter("shopcast_stepped_predictions",
                               "Predictions computed for the newest event alone, from the "
                               "state held since the user's previous event.", registry=r)
        self.batch_size = Histogram("shopcast_batch_size_events", "Events per scoring batch.",
                                    buckets=BATCH_BUCKETS, registry=r)
        self.inference = Histogram("shopcast_inference_seconds",
                                   "Time of one ONNX call for a batch.",
                                   buckets=LATENCY_BUCKETS, registry=r)
        self.event_to_prediction = Histogram(
            "shopcast_event_to_prediction_seconds",
            "Event time (the event's ts) to prediction sent.", buckets=EVENT_TIME_BUCKETS,
            registry=r)
        self.append_to_prediction = Histogram(
            "shopcast_append_to_prediction_seconds",
            "Kafka append time of the event to prediction sent.", buckets=LATENCY_BUCKETS,
            registry=r)
        self.window_length = Histogram("shopcast_window_length_events",
                                       "Events in the user's window when scored.",
                                       buckets=WINDOW_BUCKETS, registry=r)
        self.users = Gauge("shopcast_window_users",
                           "Users with a window in this worker's active partitions (exact at "
                           "each TTL sweep, once a minute; new windows added in between).",
                           registry=r)
        self.expired = Counter("shopcast_windows_expired",
                               "Windows deleted (tombstoned) after the TTL of inactivity.",
                               registry=r)
        self.lag = Gauge("shopcast_consumer_lag_messages",
                         "Messages not yet consumed, per assigned partition.",
                         ["topic", "partition"], registry=r)
        self.erasures = Counter("shopcast_erasures", "Erasure requests carried out.",
                                registry=r)
        self.rebalances = Counter("shopcast_rebalances", "Consumer group rebalances.",
                                  registry=r)
        self.model = Info("shopcast_model", "The model bundle being served.", registry=r)
        self.model_swaps = Counter("shopcast_model_swaps", "Bundles loaded without a restart, "
                                   "by result.", ["result"], registry=r)
        # Online accuracy: each prediction is scored when the user's next event arrives.
        self.online_item = Counter("shopcast_online_item_predictions",
                                   "Next events with an item that were scored against the "
                                   "previous prediction's top 10.", registry=r)
        self.online_item_hits = Counter("shopcast_online_item_hits",
                                        "Of those, the item was in the top 10 (hit@10).",
                                        registry=r)
        self.online_action = Counter("shopcast_online_action_predictions",
                                     "Next events scored against the predicted next action.",
                                     registry=r)
        self.online_action_correct = Counter("shopcast_online_action_correct",
                                             "Of those, the most likely action was right.",
                                             registry=r)
        self.purchase_outcomes = Counter(
            "shopcast_online_purchase_outcomes",
            "Resolved purchase-within-horizon predictions, by predicted probability bucket "
            "(upper bound) and outcome: for calibration.", ["bucket", "outcome"], registry=r)
        # With the outcomes, this gives each bucket's mean predicted probability (expected / all
        # outcomes) beside its observed purchase rate (purchase / all outcomes).
        self.purchase_expected = Counter(
            "shopcast_online_purchase_expected",
            "Sum of the predicted purchase probabilities of resolved predictions, by "
            "probability bucket: the purchases the model expected.", ["bucket"], registry=r)
        # The funnel and search figures of shopcast analyze, live (see observe_funnel).
        self.funnel = Counter("shopcast_funnel_events",
                              "New events by funnel step: browse (browse and search events), "
                              "click, add_to_cart, purchase. Redeliveries are not counted.",
                              ["step"], registry=r)
        self.searches_followed = Counter("shopcast_searches_followed",
                                         "Searches whose user's next event has arrived.",
                                         registry=r)
        self.zero_click_searches = Counter("shopcast_zero_click_searches",
                                           "Of those, the next event was not a click: the "
                                           "search found nothing the user wanted.", registry=r)
        self._prefill()

    def _prefill(self) -> None:
        # Series exist from the start (at zero), so rates and alerts work before
        # the first bad record or the first event of a type.
        for action in ACTIONS:
            self.events.labels(action)
        for reason in REASONS:
            self.dead_letters.labels(reason)
        for bucket in PROBABILITY_BUCKETS:
            self.purchase_expected.labels(bucket)
            for outcome in ("purchase", "none"):
                self.purchase_outcomes.labels(bucket, outcome)
        for result in ("loaded", "refused"):
            self.model_swaps.labels(result)
        for step in dict.fromkeys(FUNNEL_STEP.values()):
            self.funnel.labels(step)

    def observe_admitted(self, ready: Sequence[Any]) -> None:
        """Count a scored batch of admitted events (``streams.pipeline.Ready``).

        Called from the scorer thread, off the event loop: per-event metric
        updates take locks and cost more than the rest of admitting an event.
        """
        self.batch_size.observe(len(ready))
        by_type = Tally(r.event.type for r in ready)
        for kind, n in by_type.items():
            self.events.labels(kind).inc(n)
        observe_all(self.window_length, [r.window_length for r in ready])
        new_windows = duplicates = 0
        for r in ready:
            duplicates += r.duplicate
            # A new window; the sweep sets the users gauge exactly once a minute, counting
            # new windows keeps it current in between.
            new_windows += not r.duplicate and r.window_length == 1
        if duplicates:
            self.duplicates.inc(duplicates)
        if new_windows:
            self.users.inc(new_windows)
        self.observe_funnel(ready)

    def observe_funnel(self, ready: Sequence[Any]) -> None:
        """Count a batch's funnel steps and the searches its events follow.

        A search is zero-click when the same user's next event is not a click. The
        previous event's action is read from the window the event was scored on (the
        record before the newest), so this needs no state of its own; a search that
        ends a user's activity is counted when, and if, the user comes back.
        Redeliveries are skipped: their first delivery was counted.
        """
        steps: Tally[str] = Tally()
        followed = zero_click = 0
        for r in ready:
            if r.duplicate:
                continue
            steps[FUNNEL_STEP[r.event.type]] += 1
            if r.window_length < 2:
                continue
            size = len(r.records) // r.window_length
            if r.records[-2 * size + ACTION_OFFSET] == SEARCH_CODE:
                followed += 1
                zero_click += r.event.type != CLICK
        for step, n in steps.items():
            self.funnel.labels(step).inc(n)
        if followed:
            self.searches_followed.inc(followed)
        if zero_click:
            self.zero_click_searches.inc(zero_click)

    def set_model(self, version: str, created_at: str, horizon_seconds: int) -> None:
        """Publish the served bundle's identity."""
        self.model.info({"version": version, "created_at": created_at,
                         "horizon_seconds": str(horizon_seconds)})

    def set_lag(self, lags: Iterable[tuple[str, int, int]]) -> None:
        """Replace the lag gauges with ``(topic, partition, lag)`` for the assigned partitions."""
        self.lag.clear()
        for topic, partition, lag in lags:
            self.lag.labels(topic, str(partition)).set(max(0, lag))

    def observe_sent(self, sent_at: float, event_ts_ms: Sequence[int],
                     append_ts_ms: Sequence[int | None]) -> None:
        """Latency of a batch of predictions sent at ``sent_at`` (epoch seconds)."""
        observe_all(self.event_to_prediction,
                    [max(0.0, sent_at - event_ts / 1000.0) for event_ts in event_ts_ms])
        observe_all(self.append_to_prediction,
                    [max(0.0, sent_at - append_ts / 1000.0) for append_ts in append_ts_ms
                     if append_ts is not None and append_ts > 0])

    def serve(self, host: str, port: int) -> int:
        """Serve ``/metrics`` on ``host:port`` (port 0 picks a free one); returns the port."""
        server, _ = start_http_server(port, addr=host, registry=self.registry)
        return server.server_port


def observe_all(histogram: Histogram, amounts: Sequence[float]) -> None:
    """``histogram.observe(a)`` for every ``a`` in ``amounts``, updating each count once.

    prometheus_client takes a lock and walks the buckets for every observation; per
    prediction, on the event loop, that was a measurable share of a worker's time. This
    files the amounts into the histogram's own bucket counters, as ``observe`` does.
    """
    if not amounts:
        return
    bounds = histogram._upper_bounds  # ascending, the last one +Inf
    counts = [0] * len(bounds)
    for amount in amounts:
        counts[bisect_left(bounds, amount)] += 1  # the first bucket with amount <= bound
    histogram._sum.inc(sum(amounts))
    for bucket, count in zip(histogram._buckets, counts, strict=True):
        if count:
            bucket.inc(count)


def probability_bucket(p: float) -> str:
    """The calibration bucket (upper bound, one decimal) of a probability."""
    for bucket in PROBABILITY_BUCKETS:
        if p <= float(bucket):
            return bucket
    return PROBABILITY_BUCKETS[-1]
