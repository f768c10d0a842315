"""Turn an interaction table people already have (CSV, TSV, Parquet) into an Event v1 log.

The caller names the columns: user, item and time are required; event type,
query, category and price are optional. A table without a type column is a
log of plain interactions, all of one type (``click`` by default). Every row
goes through :func:`streams.contracts.decode_event`, the validation a worker
applies, so a row that would be a dead letter in production is counted and
reported with its reason here (and optionally written to a reject file),
never silently dropped. Event ids are derived from the row's position in
the input, so importing the same table twice gives the same log.

Times: integer or decimal epoch seconds, milliseconds, microseconds or
nanoseconds, or ISO 8601 / RFC 3339 text; ``auto`` picks the unit from the
magnitude of the numbers, and text without a time zone is taken as UTC.
"""

from __future__ import annotations

import math
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from model_export.simulator.writer import open_output
from streams.contracts import ACTIONS, Event, Rejection, decode_event

TIME_UNITS = ("auto", "s", "ms", "us", "ns", "iso")
_MS_PER_UNIT = {"s": 1000.0, "ms": 1.0, "us": 1e-3, "ns": 1e-6}
FORMATS = ("csv", "tsv", "parquet")


class TableError(ValueError):
    """The table or the options cannot be imported at all (not a per-row problem)."""


@dataclass(frozen=True)
class Columns:
    """Which input column holds which event field (None: not present)."""

    user: str
    item: str
    time: str
    type: str | None = None
    query: str | None = None
    category: str | None = None
    price: str | None = None

    def used(self) -> list[str]:
        """The input columns that are read."""
        return [c for c in (self.user, self.item, self.time, self.type, self.query,
                            self.category, self.price) if c is not None]


@dataclass
class ImportReport:
    """What an import did: counts, rejections by reason with examples, the time range."""

    rows: int = 0
    events: int = 0
    rejected: Counter[str] = field(default_factory=Counter)
    examples: dict[str, str] = field(default_factory=dict)  # reason -> first message
    types: Counter[str] = field(default_factory=Counter)
    users: int = 0
    items: int = 0
    first_ts: int | None = None
    last_ts: int | None = None
    time_unit: str = ""

    def summary(self) -> str:
        """A few lines for people."""
        lines = [f"read {self.rows:,} rows; wrote {self.events:,} events of {self.users:,} "
                 f"users and {self.items:,} items; times read as {self.time_unit}"]
        if self.first_ts is not None and self.last_ts is not None:
            lines.append(f"time range {_iso(self.first_ts)} .. {_iso(self.last_ts)}")
        lines.append("event types: " + ", ".join(f"{k} {v:,}" for k, v in
                                                  self.types.most_common()))
        total = sum(self.rejected.values())
        if total:
            lines.append(f"rejected {total:,} rows ({total / max(1, self.rows):.1%}):")
            for reason, n in self.rejected.most_common():
                lines.append(f"  {reason}: {n:,} (e.g. {self.examples[reason]})")
        else:
            lines.append("rejected 0 rows")
        return "\n".join(lines)


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).isoformat(timespec="milliseconds").replace(
        "+00:00", "Z")


def parse_type_map(text: str | None) -> dict[str, str]:
    """``view=browse,cart=add_to_cart`` as a dict; every target must be an event type."""
    mapping: dict[str, str] = {}
    if not text:
        return mapping
    for part in text.split(","):
        if not part.strip():
            continue
        source, sep, target = part.partition("=")
        target = target.strip()
        if not sep or not source.strip():
            raise TableError(f"--type-map entry {part!r} is not SOURCE=TYPE, e.g. view=browse")
        if target not in ACTIONS:
            raise TableError(f"--type-map maps {source.strip()!r} to {target!r}, which is not "
                               "one of " + ", ".join(ACTIONS))
        mapping[source.strip()] = target
    return mapping


def detect_format(path: Path, fmt: str | None) -> str:
    """The table's format: given explicitly, or from the file name."""
    if fmt:
        if fmt not in FORMATS:
            raise TableError(f"--format {fmt!r} is not one of " + ", ".join(FORMATS))
        return fmt
    suffixes = [s.lower() for s in path.suffixes if s.lower() not in (".gz", ".bz2", ".zst")]
    last = suffixes[-1] if suffixes else ""
    if last in (".parquet", ".pq"):
        return "parquet"
    if last in (".tsv", ".tab"):
        return "tsv"
    if last in (".csv", ".txt"):
        return "csv"
    raise TableError(f"cannot tell the format of {path.name!r} from its name; pass --format "
                       "csv, tsv or parquet")


def read_table(path: Path, fmt: str, columns: Columns) -> Any:
    """The needed columns as a pyarrow Table (CSV/TSV columns are read as text)."""
    import pyarrow as pa
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    if not path.exists():
        raise TableError(f"input {str(path)!r} does not exist")
    wanted = list(dict.fromkeys(columns.used()))
    if fmt == "parquet":
        names = pq.read_schema(path).names
        _check_columns(wanted, names, path)
        return pq.read_table(path, columns=wanted)
    delimiter = "\t" if fmt == "tsv" else ","
    # Text everywhere: an id such as "007" must stay "007", and times are parsed here.
    convert = pacsv.ConvertOptions(column_types={c: pa.string() for c in wanted},
                                   include_columns=wanted, strings_can_be_null=True,
                                   quoted_strings_can_be_null=False)
    try:
        header = pacsv.open_csv(path, parse_options=pacsv.ParseOptions(
            delimiter=delimiter)).schema.names
    except pa.ArrowInvalid as exc:
        raise TableError(f"cannot parse {path.name} as {fmt.upper()}: {exc}") from None
    _check_columns(wanted, header, path)
    try:
        return pacsv.read_csv(path, parse_options=pacsv.ParseOptions(
            delimiter=delimiter, newlines_in_values=True), convert_options=convert)
    except pa.ArrowInvalid as exc:
        raise TableError(f"cannot parse {path.name} as {fmt.upper()}: {exc}") from None


def _check_columns(wanted: list[str], names: list[str], path: Path) -> None:
    missing = [c for c in wanted if c not in names]
    if missing:
        raise TableError(f"{path.name} has no column {', '.join(map(repr, missing))}; its "
                           f"columns are {', '.join(map(repr, names)) or '(none found)'}")


def _texts(column: Any) -> list[str | None]:
    """A column as Python strings (integral floats without '.0', empty strings as None)."""
    import pyarrow as pa

    values = column.to_pylist()
    if pa.types.is_floating(column.type):
        return [None if v is None or (isinstance(v, float) and math.isnan(v))
                else str(int(v)) if float(v).is_integer() else repr(v) for v in values]
    return [None if v is None or v == "" else str(v).strip() or None for v in values]


def time_values(column: Any, unit: str) -> tuple[list[int | str | None], str]:
    """Epoch milliseconds per row (a string holding the problem when unparseable), and the unit.

    ``auto``: timestamp columns are used as they are; numbers are seconds,
    milliseconds, microseconds or nanoseconds by the magnitude of their median
    (now is about 1.8e9 s); other text is ISO 8601.
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    if unit not in TIME_UNITS:
        raise TableError(f"--time-unit {unit!r} is not one of " + ", ".join(TIME_UNITS))
    if pa.types.is_timestamp(column.type) or pa.types.is_date(column.type):
        ms = pc.cast(pc.cast(column, pa.timestamp("ms")), pa.int64()).to_pylist()
        return list(ms), "timestamp"
    raw = column.to_pylist()
    numbers: list[float | None] = []
    if unit in ("auto", "s", "ms", "us", "ns"):
        numbers = [_number(v) for v in raw]
        present = [v for v in raw if v not in (None, "")]
        numeric = sum(n is not None for n in numbers)
        if unit == "auto":
            unit = "iso"
            if present and numeric >= 0.5 * len(present):
                finite = sorted(n for n in numbers if n is not None)
                mid = abs(finite[len(finite) // 2])
                unit = "s" if mid < 1e11 else "ms" if mid < 1e14 else "us" if mid < 1e17 \
                    else "ns"
    if unit == "iso":
        return [_iso_ms(v) for v in raw], "iso"
    factor = _MS_PER_UNIT[unit]
    out: list[int | str | None] = []
    for v, n in zip(raw, numbers, strict=True):
        if v is None or v == "":
            out.append(None)
        elif n is None:
            out.append(f"time {str(v)[:40]!r} is not a number of {unit}")
        else:
            out.append(int(round(n * factor)))
    return out, unit


def _number(value: Any) -> float | None:
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value) if math.isfinite(value) else None
    try:
        n = float(str(value).strip())
    except ValueError:
        return None
    return n if math.isfinite(n) else None


def _iso_ms(value: Any) -> int | str | None:
    if value is None or value == "":
        return None
    text = str(value).strip()
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        return f"time {text[:40]!r} is not ISO 8601"
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)  # a table without zones is taken as UTC
    return int(parsed.timestamp() * 1000)


def convert_rows(table: Any, columns: Columns, *, time_unit: str = "auto",
                 type_map: dict[str, str] | None = None, default_type: str = "click",
                 id_prefix: str = "imp", now_ms: int | None = None,
                 report: ImportReport | None = None
                 ) -> Iterator[tuple[int, Event | Rejection, dict[str, Any]]]:
    """Validate every row: yields (row number from 1, event or rejection, the row's values)."""
    if default_type not in ACTIONS:
        raise TableError(f"--default-type {default_type!r} is not one of " + ", ".join(ACTIONS))
    mapping = type_map or {}
    now_ms = int(time.time() * 1000) if now_ms is None else now_ms
    users = _texts(table.column(columns.user))
    items = _texts(table.column(columns.item))
    raw_times = table.column(columns.time).to_pylist()
    times, unit = time_values(table.column(columns.time), time_unit)
    if report is not None:
        report.time_unit = unit
    n = table.num_rows
    types = _texts(table.column(columns.type)) if columns.type else [None] * n
    queries = _texts(table.column(columns.query)) if columns.query else [None] * n
    cats = _texts(table.column(columns.category)) if columns.category else [None] * n
    prices = table.column(columns.price).to_pylist() if columns.price else [None] * n
    for row in range(n):
        raw_type = types[row]
        kind = default_type if columns.type is None else (
            None if raw_type is None else mapping.get(raw_type) or mapping.get(
                raw_type.lower()) or raw_type.lower())
        obj: dict[str, Any] = {"event_id": f"{id_prefix}-{row + 1}", "user_id": users[row],
                               "type": kind, "ts": times[row]}
        source = {"user": users[row], "item": items[row], "time": raw_times[row],
                  "type": raw_type}
        if items[row] is not None:
            obj["item_id"] = items[row]
        if cats[row] is not None:
            obj["category"] = cats[row]
        if queries[row] is not None:
            obj["query"] = queries[row]
        if prices[row] is not None:
            price = _number(prices[row])
            obj["price"] = price if price is not None else prices[row]
        if isinstance(times[row], str):
            yield row + 1, Rejection("bad_timestamp", str(times[row])), source
            continue
        result = decode_event(orjson.dumps({k: v for k, v in obj.items() if v is not None}),
                              now_ms=now_ms)
        yield row + 1, result, source


def import_table(path: Path | str, out: Path | str, columns: Columns, *, fmt: str | None = None,
                 time_unit: str = "auto", type_map: dict[str, str] | None = None,
                 default_type: str = "click", id_prefix: str = "imp",
                 rejects: Path | str | None = None, now_ms: int | None = None) -> ImportReport:
    """Import a table into an event log sorted by user, then time; returns the report."""
    path = Path(path)
    table = read_table(path, detect_format(path, fmt), columns)
    report = ImportReport()
    events: list[Event] = []
    reject_lines: list[bytes] = []
    for row, result, source in convert_rows(table, columns, time_unit=time_unit,
                                            type_map=type_map, default_type=default_type,
                                            id_prefix=id_prefix, now_ms=now_ms, report=report):
        report.rows += 1
        if isinstance(result, Event):
            events.append(result)
            continue
        report.rejected[result.reason] += 1
        report.examples.setdefault(result.reason, f"row {row}: {result.message}")
        if rejects is not None:
            reject_lines.append(orjson.dumps({"row": row, "reason": result.reason,
                                              "message": result.message, "values": source},
                                             option=orjson.OPT_APPEND_NEWLINE))
    # By user, then time; the stable sort keeps the table's order for equal times.
    events.sort(key=lambda e: (e.user_id, e.ts_ms))
    with open_output(out) as fh:
        for start in range(0, len(events), 8192):
            fh.write(b"".join(orjson.dumps(e.to_dict(), option=orjson.OPT_APPEND_NEWLINE)
                              for e in events[start:start + 8192]))
    if rejects is not None:
        with open_output(rejects) as fh:
            fh.write(b"".join(reject_lines))
    report.events = len(events)
    report.types.update(e.type for e in events)
    report.users = len({e.user_id for e in events})
    report.items = len({e.item_id for e in events if e.item_id is not None})
    if events:
        report.first_ts = min(e.ts_ms for e in events)
        report.last_ts = max(e.ts_ms for e in events)
    return report

