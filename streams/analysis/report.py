"""Writing the report: ``report.json``, one PNG per chart and a self-contained ``report.html``.

The page embeds its charts as data URIs and has no script, so it opens from
a file, a mail attachment or an artefact store alike. Every text that came
from the log (queries, categories, item ids) is HTML-escaped.
"""

from __future__ import annotations

import base64
import html
from pathlib import Path
from typing import Any

import orjson

from streams.analysis import charts


def write_report(figures: dict[str, Any], out: Path) -> dict[str, Path]:
    """Write the JSON, the charts and the HTML page into ``out``; returns their paths."""
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / "report.json", "html": out / "report.html"}
    paths["json"].write_bytes(orjson.dumps(figures, option=orjson.OPT_INDENT_2))
    images = draw_charts(figures)
    for name, png in images.items():
        path = out / f"{name}.png"
        path.write_bytes(png)
        paths[name] = path
    paths["html"].write_text(render_html(figures, images), encoding="utf-8")
    return paths


def draw_charts(figures: dict[str, Any]) -> dict[str, bytes]:
    """Every chart the figures allow, by name."""
    images = {"funnel": charts.funnel_chart(figures["funnel"])}
    if figures["funnel"]["by_category"]:
        images["funnel_by_category"] = charts.category_chart(figures["funnel"])
    images["visits"] = charts.visits_chart(figures["visits"])
    if figures["returns"]["cohorts"]:
        images["returns"] = charts.cohort_chart(figures["returns"])
    if figures["search"]["top_zero_click_queries"]:
        images["search"] = charts.search_chart(figures["search"])
    if figures["affinity"]["categories"]:
        images["affinity"] = charts.affinity_chart(figures["affinity"])
    if figures["revenue"] is not None:
        images["revenue"] = charts.revenue_chart(figures["revenue"])
    return images


_STYLE = """
body { font: 14px/1.45 system-ui, sans-serif; margin: 2em auto; max-width: 980px;
       color: #222; padding: 0 1em; }
h1 { margin-bottom: 0.2em; } h2 { margin-top: 1.8em; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; margin: 0.6em 0; font-size: 13px; }
th, td { padding: 3px 10px; border-bottom: 1px solid #eee; text-align: right; }
th:first-child, td:first-child { text-align: left; }
.cards { display: flex; flex-wrap: wrap; gap: 12px; }
.card { background: #f5f7fa; border-radius: 6px; padding: 8px 14px; }
.card b { display: block; font-size: 20px; }
img { max-width: 100%; } .note { color: #666; font-size: 12px; }
"""


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{value:.1%}"


def _num(value: float | None, digits: int = 0) -> str:
    return "–" if value is None else f"{value:,.{digits}f}"


def _table(head: list[str], rows: list[list[Any]]) -> str:
    top = "".join(f"<th>{_e(h)}</th>" for h in head)
    body = "".join("<tr>" + "".join(f"<td>{_e(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><tr>{top}</tr>{body}</table>"


def _img(images: dict[str, bytes], name: str, alt: str) -> str:
    if name not in images:
        return ""
    data = base64.b64encode(images[name]).decode("ascii")
    return f'<p><img src="data:image/png;base64,{data}" alt="{_e(alt)}"></p>'


def _cards(items: list[tuple[str, str]]) -> str:
    return '<div class="cards">' + "".join(
        f'<div class="card"><b>{_e(v)}</b>{_e(k)}</div>' for k, v in items) + "</div>"


def render_html(figures: dict[str, Any], images: dict[str, bytes]) -> str:
    """The report page: headline figures, charts and tables."""
    log, funnel, visits = figures["log"], figures["funnel"], figures["visits"]
    returns, search, affinity = figures["returns"], figures["search"], figures["affinity"]
    revenue = figures["revenue"]
    overall = funnel["overall"]
    parts = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        "<title>shopcast behaviour report</title>",
        f"<style>{_STYLE}</style></head><body>",
        "<h1>What users do</h1>",
        f"<p class='note'>{_e(log['path'])}: {log['events']:,} events, {log['users']:,} users"
        f", {sum(log['rejected'].values()):,} records skipped as invalid.</p>",
        _cards([("visits", _num(visits["visits"])),
                ("visit → purchase", _pct(overall["visit_to_purchase"])),
                ("bounce rate", _pct(visits["bounce_rate"])),
                ("users who return", _pct(returns["return_rate"])),
                ("searches with no click", _pct(search["zero_click_rate"]))]
               + ([("revenue", _num(revenue["total"])),
                   ("average order", _num(revenue["average_order_value"], 2))]
                  if revenue else [])),
        "<h2>Funnel</h2>",
        "<p>Every visit browses; a visit reaches a step when it has that step's event after "
        "the one before. Conversion is the share of the step before; drop-off the rest.</p>",
        _img(images, "funnel", "funnel"),
        _table(["step", "visits", "conversion", "drop-off"],
               [[s, _num(overall["visits"][s]), _pct(overall["conversion"].get(s)),
                 _pct(overall["drop_off"].get(s))] for s in funnel["steps"]]),
        _img(images, "funnel_by_category", "funnel by category"),
        _table(["category", "visits", "→ click", "→ add_to_cart", "→ purchase",
                "visit → purchase"],
               [[c, _num(r["visits"]["browse"]), _pct(r["conversion"]["click"]),
                 _pct(r["conversion"]["add_to_cart"]), _pct(r["conversion"]["purchase"]),
                 _pct(r["visit_to_purchase"])] for c, r in funnel["by_category"].items()]),
        "<p>What the next event of a visit is, after each action:</p>",
        _table(["after", "events", "browse", "search", "click", "add_to_cart", "purchase",
                "leave"],
               [[a, _num(r["events"]), *[_pct(p) for p in r["next"].values()]]
                for a, r in funnel["next_step"].items()]),
        "<h2>Visits</h2>",
        _img(images, "visits", "events per visit"),
        _table(["", "mean", "median", "90th percentile", "max"],
               [[name, *[_num(visits[key][k], 1) for k in ("mean", "median", "p90", "max")]]
                for name, key in (("events per visit", "events_per_visit"),
                                  ("duration (s)", "duration_seconds"),
                                  ("hours between a user's visits", "hours_between_visits"))]),
        "<h2>Returns by cohort</h2>",
        "<p class='note'>Cohort: the week of a user's first visit in the log. Week k: the "
        "share active again k weeks after it, among users observed that long.</p>",
        _img(images, "returns", "cohort retention"),
        _table(["cohort", "users", "came back"],
               [[c["week"], _num(c["users"]), _pct(c["returned"])]
                for c in returns["cohorts"]]),
        "<h2>Search</h2>",
        f"<p>{search['searches']:,} searches, {search['zero_click']:,} followed by no click "
        "(the next event of the visit is not a click, or the visit ends). Queries are "
        "scrubbed of personal data before they are counted.</p>",
        _img(images, "search", "zero-click searches"),
        _table(["top query", "searches", "no click"],
               [[q["query"], _num(q["searches"]), _num(q["zero_click"])]
                for q in search["top_queries"][:15]]),
        _table(["category the search led to", "searches", "top terms"],
               [[c, _num(r["searches"]), ", ".join(t["term"] for t in r["terms"])]
                for c, r in search["terms_by_category"].items()]),
        "<h2>Category affinity</h2>",
        _img(images, "affinity", "category affinity"),
        "<h2>Bought together</h2>",
        f"<p>{affinity['baskets']:,} visits bought two or more different items.</p>",
        _table(["items", "visits"],
               [[" + ".join(p["items"]), _num(p["visits"])]
                for p in affinity["bought_together"]]),
    ]
    if revenue:
        parts += [
            "<h2>Revenue</h2>",
            _img(images, "revenue", "revenue per day"),
            _table(["category", "revenue"],
                   [[c, _num(v, 2)] for c, v in revenue["by_category"].items()]),
        ]
    else:
        parts.append("<h2>Revenue</h2><p>No purchase in the log has a price.</p>")
    parts.append("</body></html>")
    return "\n".join(p for p in parts if p)
