"""shopcast analyze on a small hand-made log: every figure against values worked out by hand.

The log (T = 2026-01-01T00:00:00Z, a Thursday in ISO week 2026-W01):

* u1, visit s1 at T: search "Red Shoes for bob@example.com", click sku-1 (shoes, 50),
  add_to_cart sku-1, purchase sku-1 (50 × 2), purchase sku-2 (socks, 5) -- 70 s.
* u1, visit s2 at T + 8 days: browse socks, click sku-2 -- 20 s.
* u2 (no session ids) at T + 1 h: search "gift", search "gift ideas", browse shoes -- 15 s;
  then at T + 3 h (a 2 h gap: a new visit) click sku-1.
* u3 at T + 2 h: search "socks", and nothing else.
* u4 at T + 15 days: browse socks.
* two broken records: one without fields, one not JSON.
"""

from __future__ import annotations

import gzip
import io
from contextlib import redirect_stdout
from pathlib import Path

import orjson
import pytest

from streams.analysis.analyze import analyze_log
from streams.cli import main

T = 1_767_225_600_000
S, H, D = 1000, 3_600_000, 86_400_000


def ev(n: int, user: str, kind: str, ts: int, **fields: object) -> dict[str, object]:
    return {"event_id": f"e{n}", "user_id": user, "type": kind, "ts": ts, **fields}


EVENTS = [
    ev(1, "u1", "search", T, query="Red Shoes for bob@example.com", session_id="s1"),
    ev(2, "u1", "click", T + 10 * S, item_id="sku-1", category="shoes", price=50,
       session_id="s1"),
    ev(3, "u1", "add_to_cart", T + 30 * S, item_id="sku-1", category="shoes", session_id="s1"),
    ev(4, "u1", "purchase", T + 60 * S, item_id="sku-1", category="shoes", price=50,
       quantity=2, session_id="s1"),
    ev(5, "u1", "purchase", T + 70 * S, item_id="sku-2", category="socks", price=5,
       session_id="s1"),
    ev(6, "u2", "search", T + H, query="gift"),
    ev(7, "u2", "search", T + H + 5 * S, query="gift ideas"),
    ev(8, "u2", "browse", T + H + 15 * S, category="shoes"),
    ev(9, "u3", "search", T + 2 * H, query="socks"),
    ev(10, "u2", "click", T + 3 * H, item_id="sku-1", category="shoes", price=50),
    ev(11, "u1", "browse", T + 8 * D, category="socks", session_id="s2"),
    ev(12, "u1", "click", T + 8 * D + 20 * S, item_id="sku-2", category="socks", price=5,
       session_id="s2"),
    ev(13, "u4", "browse", T + 15 * D, category="socks"),
]


@pytest.fixture(scope="module")
def log_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("log") / "events.jsonl.gz"
    lines = [orjson.dumps(e) for e in EVENTS[:5]] + [b'{"type": "click"}', b"{oops"]
    lines += [orjson.dumps(e) for e in EVENTS[5:]]
    with gzip.open(path, "wb") as fh:
        fh.write(b"\n".join(lines) + b"\n")
    return path


@pytest.fixture(scope="module")
def report(log_path: Path) -> dict:
    return analyze_log(log_path)


def test_log_totals(report):
    log = report["log"]
    assert (log["events"], log["users"]) == (13, 4)
    assert log["rejected"] == {"missing_field": 1, "not_json": 1}
    assert (log["first_ts"], log["last_ts"]) == (T, T + 15 * D)


def test_funnel_overall(report):
    overall = report["funnel"]["overall"]
    # Six visits; three click (u1 s1, u1 s2, u2's second); only u1 s1 carts and buys.
    assert overall["visits"] == {"browse": 6, "click": 3, "add_to_cart": 1, "purchase": 1}
    assert overall["conversion"] == {"click": 0.5, "add_to_cart": pytest.approx(1 / 3),
                                     "purchase": 1.0}
    assert overall["drop_off"] == {"click": 0.5, "add_to_cart": pytest.approx(2 / 3),
                                   "purchase": 0.0}
    assert overall["visit_to_purchase"] == pytest.approx(1 / 6)


def test_funnel_by_category(report):
    by = report["funnel"]["by_category"]
    assert list(by) == ["shoes", "socks"]  # 3 visits each: ties by name
    assert by["shoes"]["visits"] == {"browse": 3, "click": 2, "add_to_cart": 1, "purchase": 1}
    # u1 s1 bought socks without carting them in the visit: the funnel stops at browse.
    assert by["socks"]["visits"] == {"browse": 3, "click": 1, "add_to_cart": 0, "purchase": 0}
    assert by["socks"]["conversion"]["purchase"] is None


def test_next_step_rates(report):
    nxt = report["funnel"]["next_step"]
    assert nxt["search"]["events"] == 4
    assert {k: v for k, v in nxt["search"]["next"].items() if v} == {
        "click": 0.25, "search": 0.25, "browse": 0.25, "leave": 0.25}
    assert nxt["click"]["events"] == 3
    assert nxt["click"]["next"]["add_to_cart"] == pytest.approx(1 / 3)
    assert nxt["click"]["next"]["leave"] == pytest.approx(2 / 3)
    assert nxt["add_to_cart"]["next"]["purchase"] == 1.0
    assert nxt["purchase"]["next"]["purchase"] == 0.5


def test_visits(report):
    visits = report["visits"]
    assert visits["visits"] == 6 and visits["bounce_rate"] == 0.5
    assert visits["events_per_visit"] == {"mean": pytest.approx(13 / 6), "median": 1.0,
                                          "p90": 3.0, "max": 5.0}
    assert visits["duration_seconds"] == {"mean": pytest.approx(105 / 6), "median": 0.0,
                                          "p90": 20.0, "max": 70.0}
    # u1: 8 days less 70 s (11,518 whole minutes); u2: 2 h less 15 s (119 minutes).
    gaps = visits["hours_between_visits"]
    assert gaps["mean"] == pytest.approx((11_518 + 119) / 2 / 60)
    assert gaps["median"] == pytest.approx(119 / 60)
    assert visits["events_histogram"] == {"1": 3, "2": 1, "3": 1, "5": 1}


def test_returns_by_cohort(report):
    returns = report["returns"]
    assert returns["users"] == 4 and returns["return_rate"] == 0.5
    w01, w03 = returns["cohorts"]
    assert (w01["week"], w01["users"], w01["returned"]) == ("2026-W01", 3, pytest.approx(2 / 3))
    # Week 1 after the first visit is observable for the W01 users (log ends at T + 15 d);
    # only u1 came back in it. Week 2 is not observable for anyone.
    assert w01["retention"][0] == pytest.approx(1 / 3) and w01["retention"][1] is None
    assert (w03["week"], w03["users"], w03["returned"]) == ("2026-W03", 1, 0.0)


def test_search_is_scrubbed_and_zero_clicks_counted(report):
    search = report["search"]
    assert (search["searches"], search["zero_click"], search["zero_click_rate"]) == (4, 3, 0.75)
    queries = {q["query"]: (q["searches"], q["zero_click"]) for q in search["top_queries"]}
    assert queries == {"red shoes for <email>": (1, 0), "gift": (1, 1), "gift ideas": (1, 1),
                       "socks": (1, 1)}
    assert "bob@example.com" not in orjson.dumps(report).decode()
    terms = search["terms_by_category"]
    assert terms["(no click)"]["searches"] == 3
    assert terms["(no click)"]["terms"][0] == {"term": "gift", "count": 2}
    assert [t["term"] for t in terms["shoes"]["terms"]] == ["for", "red", "shoes"]


def test_affinity_and_baskets(report):
    affinity = report["affinity"]
    assert affinity["categories"] == ["shoes", "socks"]
    assert affinity["moves"] == [[2, 1], [0, 1]]
    assert affinity["bought_together"] == [{"items": ["sku-1", "sku-2"], "visits": 1}]
    assert affinity["baskets"] == 1


def test_revenue(report):
    revenue = report["revenue"]
    assert (revenue["total"], revenue["orders"], revenue["average_order_value"]) == (105, 1, 105)
    assert revenue["by_category"] == {"shoes": 100, "socks": 5}
    assert revenue["by_day"] == {"2026-01-01": 105}


def test_cli_json_equals_the_figures_and_writes_the_report(log_path, report, tmp_path):
    out = io.StringIO()
    with redirect_stdout(out):
        assert main(["analyze", str(log_path), "--out", str(tmp_path), "--json"]) == 0
    printed = orjson.loads(out.getvalue())
    printed["log"].pop("seconds"), report["log"].pop("seconds", None)
    assert printed == orjson.loads(orjson.dumps(report))
    assert orjson.loads((tmp_path / "report.json").read_bytes())["funnel"] == printed["funnel"]
    page = (tmp_path / "report.html").read_text()
    assert "data:image/png;base64," in page and "&lt;email&gt;" in page
    assert (tmp_path / "funnel.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_splitting_users_over_workers_gives_the_same_figures(log_path, report):
    split = analyze_log(log_path, workers=3)
    assert split["log"]["workers"] == 3
    for key in ("funnel", "visits", "returns", "search", "affinity", "revenue"):
        assert split[key] == report[key], key
    assert {k: v for k, v in split["log"].items() if k not in ("seconds", "workers")} == \
        {k: v for k, v in report["log"].items() if k not in ("seconds", "workers")}


def test_text_from_the_log_cannot_break_the_charts_or_the_page(tmp_path):
    from streams.analysis.report import write_report

    odd = ["$\\frac{$", "<script>alert(1)</script>", "price $5 to $10", "x" * 300]
    events = [ev(i, f"u{i}", "search", T + i * S, query=q) for i, q in enumerate(odd)]
    events += [ev(9, "u9", "browse", T, category="$\\mathrm{"), ev(10, "u9", "click", T + S,
               item_id="<b>", category="a & b")]
    path = tmp_path / "odd.jsonl"
    path.write_bytes(b"".join(orjson.dumps(e) + b"\n" for e in events))
    paths = write_report(analyze_log(path), tmp_path / "out")
    page = paths["html"].read_text()
    assert "<script>" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "a &amp; b" in page and "search" in paths


def test_a_log_without_prices_has_no_revenue(tmp_path):
    path = tmp_path / "plain.jsonl"
    path.write_bytes(orjson.dumps(ev(1, "u", "purchase", T, item_id="x")) + b"\n")
    assert analyze_log(path)["revenue"] is None


def test_parquet_logs_give_the_same_figures(log_path, report, tmp_path):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    path = tmp_path / "events.parquet"
    rows = [{k: e.get(k) for k in ("event_id", "user_id", "type", "ts", "item_id", "category",
                                   "query", "price", "quantity", "session_id")}
            for e in EVENTS]
    for row in rows:
        row["price"] = None if row["price"] is None else float(row["price"])
    pq.write_table(pa.Table.from_pylist(rows), path)
    again = analyze_log(path)
    for key in ("funnel", "visits", "returns", "search", "affinity", "revenue"):
        assert again[key] == report[key], key
