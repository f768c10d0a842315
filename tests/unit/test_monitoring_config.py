"""Prometheus config, alert rules and the Grafana dashboard against what a worker exports.

promtool (Debian's ``prometheus`` package) checks the config and the rules and runs the rules'
unit tests. Every metric the dashboard and the alert rules query must be one
:class:`streams.metrics.WorkerMetrics` exports, and every label they match on one it has: a
renamed metric cannot leave a silent, empty panel or an alert that never fires.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from prometheus_client.metrics import MetricWrapperBase

from streams.metrics import WorkerMetrics

REPO = Path(__file__).resolve().parents[2]
PROMETHEUS = REPO / "deploy" / "prometheus"
GRAFANA = REPO / "deploy" / "grafana"
DASHBOARD = GRAFANA / "dashboards" / "shopcast.json"

# Series Prometheus itself makes for every target; the dashboard may use them.
SCRAPE_SERIES = {"up", "scrape_duration_seconds", "scrape_samples_scraped"}
# Labels Prometheus attaches to every scraped series (target labels of prometheus.yml).
TARGET_LABELS = {"job", "instance", "service"}
KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "offset", "bool",
            "and", "or", "unless", "atan2", "inf", "nan"}
# Metrics the issue asks to see on the dashboard.
ON_THE_DASHBOARD = {
    "shopcast_events_total", "shopcast_predictions_total", "shopcast_dead_letters_total",
    "shopcast_consumer_lag_messages", "shopcast_append_to_prediction_seconds_bucket",
    "shopcast_event_to_prediction_seconds_bucket", "shopcast_inference_seconds_bucket",
    "shopcast_online_item_hits_total", "shopcast_online_item_predictions_total",
    "shopcast_online_action_correct_total", "shopcast_online_purchase_outcomes_total",
    "shopcast_online_purchase_expected_total", "shopcast_model_info",
    "shopcast_rebalances_total", "shopcast_window_users",
    "shopcast_funnel_events_total", "shopcast_zero_click_searches_total",
    "shopcast_searches_followed_total", "shopcast_stepped_predictions_total",
}


def exported() -> dict[str, set[str]]:
    """Every series name a worker exports, with the label names it carries."""
    metrics = WorkerMetrics()
    out: dict[str, set[str]] = {}
    for metric in vars(metrics).values():
        if not isinstance(metric, MetricWrapperBase):
            continue
        name, labels = metric._name, set(metric._labelnames)
        kind = metric._type
        if kind == "counter":
            out[f"{name}_total"] = labels
        elif kind == "histogram":
            out[f"{name}_bucket"] = labels | {"le"}
            out[f"{name}_sum"] = out[f"{name}_count"] = labels
        elif kind == "info":
            out[f"{name}_info"] = {"version", "created_at", "horizon_seconds"}
        else:
            out[name] = labels
    return out


def metric_names(expr: str) -> dict[str, set[str]]:
    """The metric names in a PromQL expression, each with the label names matched on it.

    A small scanner rather than a parser: strings, ranges, grouping clauses and function
    calls are removed or skipped; what remains that looks like an identifier is a metric.
    """
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    found: dict[str, set[str]] = {}
    for m in re.finditer(r"([A-Za-z_:][A-Za-z0-9_:]*)\s*\{([^}]*)\}", expr):
        labels = set(re.findall(r"([A-Za-z_][A-Za-z0-9_]*)\s*(?:=~|!~|!=|=)", m.group(2)))
        found.setdefault(m.group(1), set()).update(labels)
    bare = re.sub(r"\{[^}]*\}", " ", expr)
    bare = re.sub(r"\[[^\]]*\]", " ", bare)
    bare = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", bare)
    for m in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*", bare):
        word, before = m.group(0), bare[m.start() - 1] if m.start() else " "
        if before.isdigit() or before in ".$":  # 1e3, 0.5, 1d; Grafana variables
            continue
        if bare[m.end():].lstrip().startswith("(") or word.lower() in KEYWORDS:
            continue
        found.setdefault(word, set())
    return found


def dashboard_exprs() -> list[tuple[str, str]]:
    board = json.loads(DASHBOARD.read_text())
    exprs = [(f"panel {p['title']!r}", t["expr"]) for p in board["panels"]
             for t in p.get("targets", [])]
    for variable in board["templating"]["list"]:
        query = variable.get("query")
        if isinstance(query, dict):
            # Grafana's label_values(metric, label) is not PromQL: check it as the selector
            # metric{label=~".*"}, the metric and the label it lists.
            metric, label = re.fullmatch(r"label_values\((\w+),\s*(\w+)\)",
                                         query["query"]).groups()
            exprs.append((f"variable {variable['name']}", f'{metric}{{{label}=~".*"}}'))
    return exprs


def alert_exprs() -> list[tuple[str, str]]:
    rules = yaml.safe_load((PROMETHEUS / "alerts.yml").read_text())
    return [(f"alert {r['alert']}", r["expr"]) for g in rules["groups"] for r in g["rules"]]


def test_the_scanner_finds_metrics_and_labels():
    expr = ('histogram_quantile(0.99, sum by (le) (rate(a_seconds_bucket{instance=~"$x"}'
            '[$__rate_interval]))) > 1e3 and sum(rate(b_total[1h] offset 1d)) / '
            'count by (version) (c_info) or absent(up{job="shopcast"} == 1)')
    assert metric_names(expr) == {"a_seconds_bucket": {"instance"}, "b_total": set(),
                                  "c_info": set(), "up": {"job"}}


@pytest.mark.parametrize(("where", "expr"), dashboard_exprs() + alert_exprs())
def test_every_queried_metric_and_label_is_exported(where, expr):
    series = exported()
    names = metric_names(expr)
    assert names, f"{where}: no metric found in {expr!r}"
    for name, labels in names.items():
        if name in SCRAPE_SERIES:
            continue
        assert name in series, f"{where} queries {name}, which no worker exports"
        unknown = labels - series[name] - TARGET_LABELS
        assert not unknown, f"{where} matches {name} on labels it does not have: {unknown}"


def test_the_dashboard_shows_every_named_metric():
    used = set()
    for _, expr in dashboard_exprs():
        used |= set(metric_names(expr))
    assert ON_THE_DASHBOARD <= used, f"not on the dashboard: {ON_THE_DASHBOARD - used}"


def test_the_dashboard_json_is_what_its_script_writes():
    sys.path.insert(0, str(GRAFANA))
    try:
        import build_dashboard
    finally:
        sys.path.remove(str(GRAFANA))
    assert DASHBOARD.read_text() == build_dashboard.render(), \
        "run: python deploy/grafana/build_dashboard.py"


def test_dashboard_panels_are_well_formed():
    board = json.loads(DASHBOARD.read_text())
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids))
    variables = {v["name"] for v in board["templating"]["list"]}
    cells: set[tuple[int, int]] = set()
    for panel in board["panels"]:
        pos = panel["gridPos"]
        assert 0 <= pos["x"] and pos["x"] + pos["w"] <= 24, panel["title"]
        mine = {(x, y) for x in range(pos["x"], pos["x"] + pos["w"])
                for y in range(pos["y"], pos["y"] + pos["h"])}
        assert not mine & cells, f"{panel['title']} overlaps another panel"
        cells |= mine
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        assert panel["targets"] and panel.get("description"), panel["title"]
        for target in panel["targets"]:
            for used in re.findall(r"\$(\w+)", target["expr"]):
                assert used.startswith("__") or used in variables, (panel["title"], used)


def test_grafana_provisioning_points_at_prometheus_and_the_dashboards():
    datasource = yaml.safe_load((GRAFANA / "provisioning" / "datasources" / "prometheus.yml")
                                .read_text())["datasources"][0]
    assert datasource["type"] == "prometheus" and datasource["url"] == "http://prometheus:9090"
    provider = yaml.safe_load((GRAFANA / "provisioning" / "dashboards" / "shopcast.yml")
                              .read_text())["providers"][0]
    compose = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    mounts = compose["services"]["grafana"]["volumes"]
    assert f"./deploy/grafana/dashboards:{provider['options']['path']}:ro" in mounts


def _promtool(*args: str) -> subprocess.CompletedProcess[str]:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool not installed (Debian package 'prometheus'; .ci/tools.sh "
                    "installs it)")
    return subprocess.run([promtool, *args], capture_output=True, text=True, timeout=120,
                          check=False, cwd=PROMETHEUS)


@pytest.mark.prometheus
def test_prometheus_config_and_rules_pass_promtool():
    result = _promtool("check", "config", "prometheus.yml")  # checks the rule files it names
    assert result.returncode == 0, result.stdout + result.stderr
    result = _promtool("check", "rules", "alerts.yml")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


@pytest.mark.prometheus
def test_alert_rules_fire_when_they_should_and_only_then():
    result = _promtool("test", "rules", "alerts_test.yml")
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_has_a_test_and_a_severity():
    tested = set(re.findall(r"alertname: (\w+)", (PROMETHEUS / "alerts_test.yml").read_text()))
    rules = yaml.safe_load((PROMETHEUS / "alerts.yml").read_text())
    for group in rules["groups"]:
        for rule in group["rules"]:
            assert rule["alert"] in tested, f"{rule['alert']} has no promtool test"
            assert rule["labels"]["severity"] in ("critical", "warning", "info")
            assert rule["annotations"]["summary"] and rule["annotations"]["description"]
