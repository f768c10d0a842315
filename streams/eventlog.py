"""Reading and writing event log files: JSON Lines (optionally gzip) and Parquet.

A log is a sequence of records. Replay sends each record's bytes unchanged
(bad records included, so a recorded hostile stream replays as it was), keyed
by its ``user_id`` when it has one.
"""

from __future__ import annotations

import gzip
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import orjson

from streams.contracts import parse_ts


@dataclass(frozen=True, slots=True)
class LogRecord:
    """One line of a log: its bytes, the user it belongs to and its event time, if known."""

    value: bytes
    user_id: str | None
    ts_ms: int | None


def open_text(path: Path, mode: str = "rb") -> IO[bytes]:
    """Open a log file, transparently gunzipping ``.gz`` files."""
    if path.suffix == ".gz":
        # mtime=0 keeps the gzip header free of the write time: same log, same bytes.
        return gzip.GzipFile(path, mode, mtime=0)  # type: ignore[return-value]
    return path.open(mode)


def is_parquet(path: Path) -> bool:
    """True for Parquet files (by suffix)."""
    return path.suffix in (".parquet", ".pq")


def count_records(path: Path) -> int:
    """Number of records in a log (lines of a JSONL file, rows of a Parquet file)."""
    if is_parquet(path):
        import pyarrow.parquet as pq

        return int(pq.ParquetFile(path).metadata.num_rows)
    with open_text(path) as fh:
        return sum(1 for line in fh if line.strip())


def read_log(path: Path | str) -> Iterator[LogRecord]:
    """Yield the records of an event log in file order."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"event log {path} does not exist")
    if is_parquet(path):
        yield from _read_parquet(path)
        return
    with open_text(path) as fh:
        for line in fh:
            line = line.strip()
            if line:
                yield _record(line)


def _record(value: bytes) -> LogRecord:
    try:
        obj = orjson.loads(value)
    except orjson.JSONDecodeError:
        return LogRecord(value, None, None)
    if not isinstance(obj, dict):
        return LogRecord(value, None, None)
    user = obj.get("user_id")
    return LogRecord(value, user if isinstance(user, str) else None, _ts_or_none(obj.get("ts")))


def _ts_or_none(value: Any) -> int | None:
    try:
        return parse_ts(value)
    except Exception:  # a bad timestamp is the worker's to reject, not the reader's
        return None


def _read_parquet(path: Path) -> Iterator[LogRecord]:
    import pyarrow.parquet as pq

    table = pq.ParquetFile(path)
    for batch in table.iter_batches(batch_size=10_000):
        for row in batch.to_pylist():
            obj = {k: v for k, v in row.items() if v is not None}
            yield LogRecord(orjson.dumps(obj), obj.get("user_id"), _ts_or_none(obj.get("ts")))


class LogWriter:
    """Writes JSON objects (or raw JSON bytes) as JSON Lines, gzip when the name ends in .gz."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fh = open_text(self.path, "wb")
        self.count = 0

    def write(self, obj: dict[str, Any] | bytes) -> None:
        """Append one record."""
        data = obj if isinstance(obj, bytes) else orjson.dumps(obj)
        self._fh.write(data + b"\n")
        self.count += 1

    def close(self) -> None:
        """Flush and close the file."""
        self._fh.close()

    def __enter__(self) -> LogWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
