"""Simulated events as Event v1 JSON Lines, and files that are byte-identical for a seed.

Events carry integer epoch-millisecond ``ts``, a unique ``event_id`` built
from the seed, the user and the event's position, the visit's ``session_id``,
and ``category``, ``price`` and ``quantity`` where a real shop would send
them. A name ending in ``.gz`` is gzip-compressed with a zero timestamp in
the header, so the same seed gives the same bytes.
"""

from __future__ import annotations

import gzip
from collections.abc import Iterable
from pathlib import Path
from typing import IO, Any, cast

import orjson

from model_export.simulator.catalogue import Catalogue
from model_export.simulator.shopper import Event
from streams.contracts import ACTIONS


def user_id(user: int) -> str:
    """The id of the user with this index."""
    return f"u-{user}"


def event_id(seed: int, user: int, position: int) -> str:
    """A unique, deterministic event id: seed, user index and position in their history."""
    return f"ev-{seed}-{user}-{position}"


def event_dict(cat: Catalogue, seed: int, user: int, position: int, ev: Event
               ) -> dict[str, Any]:
    """One simulated event as an Event v1 object (the key order is fixed)."""
    uid = user_id(user)
    out: dict[str, Any] = {"event_id": event_id(seed, user, position), "user_id": uid,
                           "type": ACTIONS[ev.action], "ts": ev.ts}
    if ev.item >= 0:
        out["item_id"] = cat.item_ids[ev.item]
        out["category"] = cat.departments[ev.department].name
        out["price"] = cat.prices[ev.item]
    elif ev.department >= 0:
        out["category"] = cat.departments[ev.department].name
    if ev.query is not None:
        out["query"] = ev.query
    if ev.quantity:
        out["quantity"] = ev.quantity
    out["session_id"] = f"{uid}-s{ev.session}"
    return out


def event_line(cat: Catalogue, seed: int, user: int, position: int, ev: Event) -> bytes:
    """One JSON Lines record (with its newline)."""
    return orjson.dumps(event_dict(cat, seed, user, position, ev),
                        option=orjson.OPT_APPEND_NEWLINE)


def open_output(path: str | Path) -> IO[bytes]:
    """A binary file for writing; gzip (with a fixed header) when the name ends in ``.gz``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".gz":
        raw = open(path, "wb")  # noqa: SIM115 - closed through the GzipFile wrapper below
        # mtime=0 and no file name in the header: same content, same bytes.
        return cast(IO[bytes], _ClosingGzip(raw))  # GzipFile is a BufferedIOBase, not an IO
    return open(path, "wb")


class _ClosingGzip(gzip.GzipFile):
    """A GzipFile that also closes the file it wraps."""

    def __init__(self, raw: IO[bytes]) -> None:
        super().__init__(filename="", mode="wb", compresslevel=6, fileobj=raw, mtime=0)
        self._raw = raw

    def close(self) -> None:
        try:
            super().close()
        finally:
            self._raw.close()


def write_lines(path: str | Path, lines: Iterable[bytes]) -> int:
    """Write pre-serialised lines to ``path``; returns the number of bytes before compression."""
    size = 0
    with open_output(path) as out:
        chunk: list[bytes] = []
        for line in lines:
            chunk.append(line)
            size += len(line)
            if len(chunk) >= 8192:
                out.write(b"".join(chunk))
                chunk.clear()
        if chunk:
            out.write(b"".join(chunk))
    return size
