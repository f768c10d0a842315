"""Writes deploy/grafana/dashboards/shopcast.json, the Grafana dashboard of shopcast workers.

The dashboard is code so that its queries can be read and reviewed in one place; the JSON is
committed (Grafana's provisioning reads it) and a test checks that it is what this script
writes. After a change: ``python deploy/grafana/build_dashboard.py``.

Every query filters on ``instance=~"$instance"`` and uses the ``$datasource`` variable, so the
dashboard also works when imported into a Grafana with another Prometheus.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

OUT = Path(__file__).parent / "dashboards" / "shopcast.json"
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
SEL = 'instance=~"$instance"'  # every worker metric is filtered by the instance picker
RATE = "$__rate_interval"


def q(expr: str, legend: str = "", **extra: Any) -> dict[str, Any]:
    """One Prometheus query of a panel."""
    return {"expr": expr, "legendFormat": legend or "__auto", "datasource": DATASOURCE, **extra}


def ratio(hits: str, total: str, window: str = "$window") -> str:
    """Share of ``hits`` in ``total`` over ``window`` (two counters), summed over workers."""
    return (f"sum(increase({hits}{{{SEL}}}[{window}])) / "
            f"sum(increase({total}{{{SEL}}}[{window}]))")


def quantile(q_: float, histogram: str, by: str = "") -> str:
    """``histogram_quantile`` of a histogram's rate, over all selected workers."""
    group = f"le, {by}" if by else "le"
    return (f"histogram_quantile({q_}, sum by ({group}) "
            f"(rate({histogram}_bucket{{{SEL}}}[{RATE}])))")


class Layout:
    """Places panels left to right in rows of 24 grid units."""

    def __init__(self) -> None:
        self.panels: list[dict[str, Any]] = []
        self.x = self.y = 0
        self.row_height = 0

    def row(self, title: str) -> None:
        """Start a new titled row."""
        self._newline()
        self.panels.append({"type": "row", "title": title, "collapsed": False, "panels": [],
                            "gridPos": {"h": 1, "w": 24, "x": 0, "y": self.y}})
        self.y += 1

    def add(self, panel: dict[str, Any], w: int, h: int = 8) -> None:
        """Add a panel ``w`` units wide, wrapping to the next line when the row is full."""
        if self.x + w > 24:
            self._newline()
        panel["gridPos"] = {"h": h, "w": w, "x": self.x, "y": self.y}
        self.panels.append(panel)
        self.x += w
        self.row_height = max(self.row_height, h)

    def _newline(self) -> None:
        self.y += self.row_height
        self.x = self.row_height = 0


def timeseries(title: str, description: str, targets: list[dict[str, Any]], unit: str,
               *, stack: bool = False, min_: float | None = 0, max_: float | None = None
               ) -> dict[str, Any]:
    """A time-series panel."""
    defaults: dict[str, Any] = {
        "unit": unit,
        "custom": {"fillOpacity": 15 if stack else 5, "lineWidth": 1, "showPoints": "never",
                   "stacking": {"mode": "normal" if stack else "none", "group": "A"}},
    }
    if min_ is not None:
        defaults["min"] = min_
    if max_ is not None:
        defaults["max"] = max_
    return {"type": "timeseries", "title": title, "description": description,
            "datasource": DATASOURCE, "targets": targets,
            "fieldConfig": {"defaults": defaults, "overrides": []},
            "options": {"legend": {"displayMode": "list", "placement": "bottom",
                                   "showLegend": True},
                        "tooltip": {"mode": "multi", "sort": "desc"}}}


def stat(title: str, description: str, expr: str, unit: str, *, decimals: int | None = None,
         thresholds: list[tuple[float | None, str]] | None = None) -> dict[str, Any]:
    """A single-number panel (the latest value)."""
    steps = [{"value": v, "color": c} for v, c in (thresholds or [(None, "green")])]
    defaults: dict[str, Any] = {"unit": unit, "thresholds": {"mode": "absolute", "steps": steps},
                                "color": {"mode": "thresholds"}}
    if decimals is not None:
        defaults["decimals"] = decimals
    return {"type": "stat", "title": title, "description": description,
            "datasource": DATASOURCE, "targets": [q(expr, title)],
            "fieldConfig": {"defaults": defaults, "overrides": []},
            "options": {"reduceOptions": {"calcs": ["lastNotNull"], "fields": "",
                                          "values": False},
                        "colorMode": "value", "graphMode": "area", "textMode": "value",
                        "justifyMode": "auto", "orientation": "auto"}}


def funnel_bars(title: str, description: str, targets: list[dict[str, Any]]
                ) -> dict[str, Any]:
    """A horizontal bar gauge, one bar per query (one query per step keeps funnel order)."""
    return {"type": "bargauge", "title": title, "description": description,
            "datasource": DATASOURCE, "targets": targets,
            "fieldConfig": {"defaults": {"unit": "none", "min": 0, "decimals": 0},
                            "overrides": []},
            "options": {"orientation": "horizontal", "displayMode": "gradient",
                        "showUnfilled": True, "valueMode": "color",
                        "reduceOptions": {"calcs": ["lastNotNull"], "fields": "",
                                          "values": False}}}


FUNNEL_STEPS = ("browse", "click", "add_to_cart", "purchase")


def funnel_step(step: str, window: str = "$window") -> str:
    """Events of one funnel step over ``window``, summed over workers."""
    return (f'sum(increase(shopcast_funnel_events_total{{{SEL}, step="{step}"}}'
            f"[{window}]))")


def build() -> dict[str, Any]:
    """The whole dashboard as a dict."""
    lay = Layout()

    lay.row("Overview")
    lay.add(stat("Workers up", "Workers that Prometheus scraped at the last attempt.",
                 f'sum(up{{job="shopcast", {SEL}}})', "none",
                 thresholds=[(None, "red"), (1, "green")]), 4, 4)
    lay.add(stat("Events in / s", "Valid events consumed per second, all workers.",
                 f"sum(rate(shopcast_events_total{{{SEL}}}[{RATE}]))", "ops"), 4, 4)
    lay.add(stat("Predictions / s", "Predictions sent per second, all workers.",
                 f"sum(rate(shopcast_predictions_total{{{SEL}}}[{RATE}]))", "ops"), 4, 4)
    lay.add(stat("Dead-letter share", "Rejected records / all records read from the events "
                 "topic.",
                 f"sum(rate(shopcast_dead_letters_total{{{SEL}}}[{RATE}])) / "
                 f"(sum(rate(shopcast_events_total{{{SEL}}}[{RATE}])) + "
                 f"sum(rate(shopcast_dead_letters_total{{{SEL}}}[{RATE}])))", "percentunit",
                 thresholds=[(None, "green"), (0.01, "orange"), (0.05, "red")]), 4, 4)
    lay.add(stat("p99 end-to-end", "99th percentile of Kafka append time to prediction sent.",
                 quantile(0.99, "shopcast_append_to_prediction_seconds"), "s",
                 thresholds=[(None, "green"), (0.5, "orange"), (1, "red")]), 4, 4)
    lay.add(stat("Online hit@10", "Share of next events whose item was in the previous "
                 "prediction's top 10, over the accuracy window.",
                 ratio("shopcast_online_item_hits_total",
                       "shopcast_online_item_predictions_total"), "percentunit",
                 decimals=1), 4, 4)

    lay.row("Throughput")
    lay.add(timeseries("Events consumed by type", "Valid events per second, by event type.",
                       [q(f"sum by (type) (rate(shopcast_events_total{{{SEL}}}[{RATE}]))",
                          "{{type}}")], "ops", stack=True), 8)
    lay.add(timeseries("Predictions sent by worker", "Predictions per second from each worker.",
                       [q(f"sum by (instance) (rate(shopcast_predictions_total{{{SEL}}}"
                          f"[{RATE}]))", "{{instance}}")], "ops", stack=True), 8)
    lay.add(timeseries("Dead letters by reason", "Records sent to the dead-letter topic per "
                       "second, by reason code (see the dead-letter contract).",
                       [q(f"sum by (reason) (rate(shopcast_dead_letters_total{{{SEL}}}"
                          f"[{RATE}]))", "{{reason}}")], "ops", stack=True), 8)

    lay.row("Latency")
    append = "shopcast_append_to_prediction_seconds"
    lay.add(timeseries("End-to-end latency (Kafka append → prediction sent)",
                       "Percentiles of the time from the event's append to the events topic to "
                       "its prediction being sent: the latency shopcast adds.",
                       [q(quantile(p, append), f"p{round(p * 100)}") for p in (0.5, 0.9, 0.99)],
                       "s"), 6)
    event_time = "shopcast_event_to_prediction_seconds"
    lay.add(timeseries("Event time → prediction sent",
                       "Percentiles from the event's own timestamp: includes producer delays "
                       "and late events (replayed logs show their age here).",
                       [q(quantile(p, event_time), f"p{round(p * 100)}") for p in (0.5, 0.99)],
                       "s"), 6)
    lay.add(timeseries("Inference time per batch", "Percentiles of one ONNX call for a batch.",
                       [q(quantile(p, "shopcast_inference_seconds"), f"p{round(p * 100)}")
                        for p in (0.5, 0.99)], "s"), 6)
    lay.add(timeseries("Batch size", "Events per scoring batch: the mean, and the 90th "
                       "percentile. Bigger batches under load amortise the model call.",
                       [q(f"sum(rate(shopcast_batch_size_events_sum{{{SEL}}}[{RATE}])) / "
                          f"sum(rate(shopcast_batch_size_events_count{{{SEL}}}[{RATE}]))",
                          "mean"),
                        q(quantile(0.9, "shopcast_batch_size_events"), "p90")], "none"), 6)
    lay.add(timeseries("Predictions stepped from a held state", "Share of predictions whose "
                       "event ran through the network alone, from the state its user's "
                       "previous event left (the rest are scored on the whole window: users "
                       "new to this worker or beyond SHOPCAST_STATE_USERS).",
                       [q(f"sum(rate(shopcast_stepped_predictions_total{{{SEL}}}[{RATE}])) / "
                          f"sum(rate(shopcast_predictions_total{{{SEL}}}[{RATE}]))",
                          "stepped")], "percentunit"), 6)

    lay.row("Kafka")
    lay.add(timeseries("Consumer lag per partition", "Messages not yet consumed, per assigned "
                       "partition of the events (and re-keyed) topic.",
                       [q(f"sum by (topic, partition) (shopcast_consumer_lag_messages{{{SEL}}})",
                          "{{topic}}/{{partition}}")], "none"), 12)
    lay.add(timeseries("Rebalances", "Consumer-group rebalances seen by each worker in the "
                       "last 5 minutes. Each pauses consumption and moves windows.",
                       [q(f"sum by (instance) (increase(shopcast_rebalances_total{{{SEL}}}[5m]))",
                          "{{instance}}")], "none"), 6)
    lay.add(timeseries("Re-keyed and duplicate events", "Events whose Kafka key was not their "
                       "user id (re-sent keyed by user), and redeliveries already in a window.",
                       [q(f"sum(rate(shopcast_rekeyed_events_total{{{SEL}}}[{RATE}]))",
                          "re-keyed"),
                        q(f"sum(rate(shopcast_duplicate_events_total{{{SEL}}}[{RATE}]))",
                          "duplicates")], "ops"), 6)

    lay.row("Model")
    lay.add(timeseries("Online accuracy", "Each prediction scored when the user's next event "
                       "arrives, over the accuracy window: item hit@10 and next-action "
                       "accuracy.",
                       [q(ratio("shopcast_online_item_hits_total",
                                "shopcast_online_item_predictions_total"), "hit@10"),
                        q(ratio("shopcast_online_action_correct_total",
                                "shopcast_online_action_predictions_total"),
                          "next action correct")], "percentunit", max_=1), 8)
    outcomes = "shopcast_online_purchase_outcomes_total"
    calibration = {
        "type": "barchart", "title": "Purchase calibration by predicted probability",
        "description": "Resolved purchase predictions over the accuracy window, grouped by "
                       "predicted probability (bucket = upper bound): the mean predicted "
                       "probability beside the observed purchase rate. A calibrated model has "
                       "the two bars level.",
        "datasource": DATASOURCE,
        "targets": [
            q(f"sum by (bucket) (increase(shopcast_online_purchase_expected_total{{{SEL}}}"
              f"[$window])) / sum by (bucket) (increase({outcomes}{{{SEL}}}[$window]))",
              "predicted", refId="A", format="table", instant=True),
            q(f'sum by (bucket) (increase({outcomes}{{outcome="purchase", {SEL}}}[$window])) '
              f"/ sum by (bucket) (increase({outcomes}{{{SEL}}}[$window]))",
              "observed", refId="B", format="table", instant=True),
        ],
        "transformations": [
            {"id": "merge", "options": {}},
            {"id": "organize", "options": {
                "excludeByName": {"Time": True},
                "renameByName": {"Value #A": "mean predicted probability",
                                 "Value #B": "observed purchase rate"}}},
            {"id": "sortBy", "options": {"sort": [{"field": "bucket"}]}},
        ],
        "fieldConfig": {"defaults": {"unit": "percentunit", "min": 0, "max": 1},
                        "overrides": []},
        "options": {"xField": "bucket", "orientation": "vertical", "showValue": "never",
                    "stacking": "none", "groupWidth": 0.7, "barWidth": 0.9,
                    "legend": {"displayMode": "list", "placement": "bottom",
                               "showLegend": True},
                    "tooltip": {"mode": "multi", "sort": "none"}},
    }
    lay.add(calibration, 8)
    lay.add(timeseries("Purchases observed / expected", "Purchases that happened within the "
                       "horizon over the sum of predicted probabilities, over the accuracy "
                       "window: 1 is calibrated, above 1 the model is too cautious.",
                       [q(f'sum(increase({outcomes}{{outcome="purchase", {SEL}}}[$window])) / '
                          f"sum(increase(shopcast_online_purchase_expected_total{{{SEL}}}"
                          "[$window]))", "observed / expected")], "none"), 8)
    lay.add({"type": "table", "title": "Model served by each worker",
             "description": "The bundle each worker serves (shopcast_model_info): version, "
                            "creation time and purchase horizon.",
             "datasource": DATASOURCE,
             "targets": [q(f"max by (instance, version, created_at, horizon_seconds) "
                           f"(shopcast_model_info{{{SEL}}})", "", format="table",
                           instant=True)],
             "transformations": [{"id": "organize", "options": {
                 "excludeByName": {"Time": True, "Value": True},
                 "indexByName": {"instance": 0, "version": 1, "created_at": 2,
                                 "horizon_seconds": 3}}}],
             "fieldConfig": {"defaults": {}, "overrides": []},
             "options": {"showHeader": True, "cellHeight": "sm"}}, 12, 6)
    lay.add(timeseries("Model swaps", "Bundles loaded without a restart (or refused) in the "
                       "last hour.",
                       [q(f"sum by (result) (increase(shopcast_model_swaps_total{{{SEL}}}[1h]))",
                          "{{result}}")], "none"), 12, 6)

    lay.row("Shoppers")
    # The live side of `shopcast analyze`: the same funnel steps and zero-click searches.
    lay.add(funnel_bars("Funnel", "Events per funnel step over the accuracy window, all "
                        "workers: browse (browse and search events), click, add_to_cart, "
                        "purchase. Event counts, not visits: shopcast analyze has the visit "
                        "funnel.",
                        [q(funnel_step(step), step, instant=True) for step in FUNNEL_STEPS]), 8)
    lay.add(timeseries("Funnel step ratios", "Events of each step per event of the step before, "
                       "over the accuracy window: click / browse, add_to_cart / click, "
                       "purchase / add_to_cart.",
                       [q(f"{funnel_step(b)} / {funnel_step(a)}", f"{b} / {a}")
                        for a, b in zip(FUNNEL_STEPS, FUNNEL_STEPS[1:], strict=False)],
                       "percentunit"), 8)
    lay.add(timeseries("Zero-click searches", "Share of searches whose user's next event was "
                       "not a click (the search found nothing wanted), over the accuracy "
                       "window. A search that ends a user's activity counts once they return.",
                       [q(ratio("shopcast_zero_click_searches_total",
                                "shopcast_searches_followed_total"), "zero-click share")],
                       "percentunit", max_=1), 8)

    lay.row("Windows")
    lay.add(timeseries("Users held in windows", "Users with a window in each worker's active "
                       "partitions (recounted by the TTL sweep every minute).",
                       [q(f"sum by (instance) (shopcast_window_users{{{SEL}}})",
                          "{{instance}}")], "none", stack=True), 8)
    lay.add(timeseries("Window length when scored", "Events in the user's window at "
                       "prediction time.",
                       [q(quantile(p, "shopcast_window_length_events"), f"p{round(p * 100)}")
                        for p in (0.5, 0.9)], "none"), 8)
    lay.add(timeseries("Windows expired and erased", "Windows deleted after the TTL of "
                       "inactivity, and by erasure requests, per second.",
                       [q(f"sum(rate(shopcast_windows_expired_total{{{SEL}}}[{RATE}]))",
                          "expired (TTL)"),
                        q(f"sum(rate(shopcast_erasures_total{{{SEL}}}[{RATE}]))", "erased")],
                       "ops"), 8)

    for number, panel in enumerate(lay.panels, start=1):
        panel["id"] = number
        for ref, target in zip("ABCDEFGH", panel.get("targets", []), strict=False):
            target.setdefault("refId", ref)
    return {
        "uid": "shopcast",
        "title": "shopcast",
        "description": "Throughput, latency, lag, dead letters and online model quality of "
                       "shopcast workers.",
        "tags": ["shopcast", "kafka", "streaming"],
        "timezone": "browser",
        "editable": True,
        "graphTooltip": 1,
        "refresh": "10s",
        "schemaVersion": 39,
        "version": 1,
        "time": {"from": "now-30m", "to": "now"},
        "templating": {"list": [
            {"name": "datasource", "label": "Data source", "type": "datasource",
             "query": "prometheus", "current": {}, "hide": 0},
            {"name": "instance", "label": "Worker", "type": "query", "datasource": DATASOURCE,
             "query": {"query": "label_values(shopcast_model_info, instance)",
                       "refId": "instances"},
             "definition": "label_values(shopcast_model_info, instance)",
             "refresh": 2, "multi": True, "includeAll": True, "allValue": ".*",
             "current": {"text": "All", "value": "$__all"}, "sort": 1, "hide": 0},
            {"name": "window", "label": "Accuracy window", "type": "custom",
             "query": "5m,15m,1h,6h,24h", "current": {"text": "15m", "value": "15m"},
             "options": [{"text": w, "value": w, "selected": w == "15m"}
                         for w in ("5m", "15m", "1h", "6h", "24h")], "hide": 0},
        ]},
        "annotations": {"list": []},
        "panels": lay.panels,
    }


def render() -> str:
    """The dashboard JSON exactly as committed."""
    return json.dumps(build(), indent=2, ensure_ascii=False) + "\n"


if __name__ == "__main__":
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(render())
    print(f"wrote {OUT}")
