"""The importer: CSV, TSV and Parquet tables become valid, sorted logs; bad rows are reported."""

import gzip
from datetime import UTC, datetime

import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from model_export.importer import Columns, TableError, import_table, parse_type_map
from streams.cli import main
from streams.contracts import Event, decode_event

T0 = 1_790_000_000  # 2026-09-21, seconds
NOW_MS = 1_800_000_000_000


def read_log(path):
    data = path.read_bytes()
    if path.suffix == ".gz":
        data = gzip.decompress(data)
    return [orjson.loads(line) for line in data.splitlines()]


def write_csv(path, header, rows, sep=","):
    path.write_text("\n".join([sep.join(header)] + [sep.join(map(str, r)) for r in rows]) + "\n")
    return path


COLS = Columns(user="user", item="item", time="ts")


def test_plain_interactions_csv_become_clicks_sorted_by_user_then_time(tmp_path):
    src = write_csv(tmp_path / "x.csv", ["user", "item", "ts"], [
        ["b", "i1", T0 + 50], ["a", "i2", T0 + 10], ["a", "i1", T0], ["b", "i3", T0 + 5]])
    report = import_table(src, tmp_path / "out.jsonl", COLS, now_ms=NOW_MS)
    events = read_log(tmp_path / "out.jsonl")
    assert [(e["user_id"], e["ts"]) for e in events] == [
        ("a", T0 * 1000), ("a", (T0 + 10) * 1000), ("b", (T0 + 5) * 1000),
        ("b", (T0 + 50) * 1000)]
    assert {e["type"] for e in events} == {"click"}
    assert report.rows == report.events == 4
    assert report.time_unit == "s"
    assert report.users == 2 and report.items == 3
    for e in events:
        assert isinstance(decode_event(orjson.dumps(e), now_ms=NOW_MS), Event)


def test_event_ids_are_unique_and_deterministic(tmp_path):
    src = write_csv(tmp_path / "x.csv", ["user", "item", "ts"],
                    [["u", f"i{k}", T0 + k] for k in range(50)])
    import_table(src, tmp_path / "a.jsonl.gz", COLS, now_ms=NOW_MS)
    import_table(src, tmp_path / "b.jsonl.gz", COLS, now_ms=NOW_MS)
    assert (tmp_path / "a.jsonl.gz").read_bytes() == (tmp_path / "b.jsonl.gz").read_bytes()
    ids = [e["event_id"] for e in read_log(tmp_path / "a.jsonl.gz")]
    assert len(set(ids)) == 50


def test_tsv_with_types_queries_categories_and_a_type_map(tmp_path):
    src = write_csv(tmp_path / "x.tsv", ["uid", "sku", "when", "kind", "text", "cat", "price"], [
        ["u1", "s1", "2026-09-21T10:00:00Z", "view", "", "shoes", "59.9"],
        ["u1", "", "2026-09-21T10:00:05+00:00", "search", "trail shoes", "", ""],
        ["u1", "s2", "2026-09-21 10:00:30", "cart", "", "shoes", "79"],
        ["u1", "s2", "2026-09-21T10:01:00Z", "buy", "", "shoes", "79"],
        ["u2", "s1", "2026-09-21T11:00:00Z", "click", "", "shoes", ""],
    ], sep="\t")
    cols = Columns(user="uid", item="sku", time="when", type="kind", query="text",
                   category="cat", price="price")
    report = import_table(src, tmp_path / "out.jsonl", cols, now_ms=NOW_MS,
                          type_map=parse_type_map("view=browse,cart=add_to_cart,buy=purchase"))
    events = read_log(tmp_path / "out.jsonl")
    assert [e["type"] for e in events] == ["browse", "search", "add_to_cart", "purchase",
                                           "click"]
    assert report.time_unit == "iso"
    assert events[0]["ts"] == int(datetime(2026, 9, 21, 10, tzinfo=UTC).timestamp() * 1000)
    assert events[2]["ts"] == events[0]["ts"] + 30_000  # no zone: UTC
    assert events[1]["query"] == "trail shoes" and "item_id" not in events[1]
    assert events[0]["category"] == "shoes" and events[0]["price"] == 59.9
    assert report.types["purchase"] == 1 and not report.rejected


@pytest.mark.parametrize("unit,scale", [("s", 1), ("ms", 1000), ("us", 10**6), ("ns", 10**9)])
def test_parquet_numeric_times_in_any_unit_are_detected(tmp_path, unit, scale):
    table = pa.table({"user": pa.array([1, 2, 1], pa.int64()),
                      "item": pa.array([10, 11, 12], pa.int64()),
                      "ts": pa.array([T0 * scale, (T0 + 1) * scale, (T0 + 2) * scale],
                                     pa.int64())})
    pq.write_table(table, tmp_path / "x.parquet")
    report = import_table(tmp_path / "x.parquet", tmp_path / "out.jsonl", COLS, now_ms=NOW_MS)
    events = read_log(tmp_path / "out.jsonl")
    assert report.time_unit == unit
    assert [e["ts"] for e in events] == [T0 * 1000, (T0 + 2) * 1000, (T0 + 1) * 1000]
    assert events[0]["user_id"] == "1" and events[0]["item_id"] == "10"


def test_parquet_timestamp_column_and_float_ids(tmp_path):
    when = [datetime(2026, 9, 21, 10, m, tzinfo=UTC) for m in range(3)]
    table = pa.table({"user": pa.array([1.0, 1.0, 2.0]), "item": ["a", "b", "c"],
                      "ts": pa.array(when, pa.timestamp("us", tz="UTC")),
                      "event": ["view", "purchase", "view"]})
    pq.write_table(table, tmp_path / "x.parquet")
    cols = Columns(user="user", item="item", time="ts", type="event")
    report = import_table(tmp_path / "x.parquet", tmp_path / "out.jsonl", cols, now_ms=NOW_MS,
                          type_map={"view": "browse"})
    events = read_log(tmp_path / "out.jsonl")
    assert [e["user_id"] for e in events] == ["1", "1", "2"]  # not "1.0"
    assert [e["type"] for e in events] == ["browse", "purchase", "browse"]
    assert events[1]["ts"] - events[0]["ts"] == 60_000
    assert report.time_unit == "timestamp"


def test_bad_rows_are_counted_with_reasons_and_written_to_the_reject_file(tmp_path):
    src = write_csv(tmp_path / "x.csv", ["user", "item", "ts", "event"], [
        ["u1", "i1", T0, "view"],
        ["u1", "", T0 + 1, "buy"],  # a purchase without an item
        ["", "i1", T0 + 2, "view"],  # no user
        ["u2", "i2", "yesterday", "view"],  # not a time
        ["u2", "i2", T0 + 3, "teleport"],  # not an event type
        ["u2", "i2", T0 * 100, "view"],  # far in the future (read as seconds)
        ["u3", "i3", T0 + 4, "cart"],
    ])
    cols = Columns(user="user", item="item", time="ts", type="event")
    report = import_table(src, tmp_path / "out.jsonl", cols, now_ms=NOW_MS,
                          time_unit="s", rejects=tmp_path / "rejects.jsonl",
                          type_map=parse_type_map("view=browse,cart=add_to_cart,buy=purchase"))
    assert report.rows == 7 and report.events == 2
    assert report.rejected == {"missing_field": 2, "bad_timestamp": 2,
                               "unknown_event_type": 1}
    rejects = read_log(tmp_path / "rejects.jsonl")
    assert [r["row"] for r in rejects] == [2, 3, 4, 5, 6]
    assert rejects[2]["values"]["time"] == "yesterday"
    assert "bad_timestamp" in report.summary() and "row 4" in report.summary()


def test_missing_columns_and_bad_options_say_what_to_do(tmp_path):
    src = write_csv(tmp_path / "x.csv", ["user", "item", "ts"], [["u", "i", T0]])
    with pytest.raises(TableError, match="no column 'time'.*'user', 'item', 'ts'"):
        import_table(src, tmp_path / "o.jsonl", Columns("user", "item", "time"))
    with pytest.raises(TableError, match="not one of"):
        parse_type_map("view=looked")
    with pytest.raises(TableError, match="--format"):
        import_table(tmp_path / "x.xlsx", tmp_path / "o.jsonl", COLS)


def test_the_cli_imports_and_prints_a_summary(tmp_path, capsys):
    src = write_csv(tmp_path / "x.csv", ["u", "i", "t", "e"], [
        ["a", "1", T0 * 1000, "view"], ["a", "2", T0 * 1000 + 5, "cart"],
        ["b", "1", T0 * 1000 + 9, "nonsense"]])
    code = main(["import", str(src), "--out", str(tmp_path / "o.jsonl.gz"), "--user-col", "u",
                 "--item-col", "i", "--time-col", "t", "--type-col", "e", "--type-map",
                 "view=browse,cart=add_to_cart", "--rejects", str(tmp_path / "r.jsonl")])
    out = capsys.readouterr().out
    assert code == 0
    assert "wrote 2 events" in out and "unknown_event_type: 1" in out
    assert "times read as ms" in out
    assert len(read_log(tmp_path / "o.jsonl.gz")) == 2
    code = main(["import", str(src), "--out", str(tmp_path / "o2.jsonl"), "--user-col", "u",
                 "--item-col", "i", "--time-col", "nope"])
    assert code == 2
