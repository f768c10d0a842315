"""Simulated live traffic for the demo and the benchmarks.

Shoppers come from the repo's simulator, drawn from the same shop (catalogue
size and seed) that the default bundle was trained on, but they are new users
the model never saw. Their events keep their real time gaps, shifted so the
newest event of each chunk of shoppers lands at the current time; a few
hostile records are mixed in so the dead-letter path is always exercised.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import orjson

from streams.eventlog import LogRecord

# The shop the default bundle was trained on (see streams/default_bundle/README.md).
DEFAULT_SHOP_ITEMS = 2000
DEFAULT_SHOP_SEED = 7
# Users from here on were never in the training log.
FIRST_NEW_USER = 1_000_000

HOSTILE: tuple[bytes, ...] = (
    b"{this is not json",
    b'{"event_id": "h-1", "user_id": "u-h", "type": "teleport", "ts": 1764400000000}',
    b'{"event_id": "h-2", "user_id": "u-h", "type": "click", "ts": 1764400000000}',
    b'{"event_id": "h-3", "user_id": 42, "type": "browse", "ts": 1764400000000, "item_id": "x"}',
    b"\xff\xfe invalid utf-8 \xc3\x28",
    b'{"event_id": "h-4", "user_id": "u-h", "type": "browse", "ts": "1970-01-01T00:00:00Z",'
    b' "category": "c"}',
    b'[1, 2, 3]',
)


@dataclass(frozen=True)
class TrafficShop:
    """Which simulated shop to draw shoppers from."""

    items: int = DEFAULT_SHOP_ITEMS
    seed: int = DEFAULT_SHOP_SEED
    users_per_chunk: int = 64
    days: float = 30.0


def simulated_traffic(shop: TrafficShop = TrafficShop(), *, hostile_every: int = 0,
                      first_user: int = FIRST_NEW_USER, retime: bool = True,
                      ) -> Iterator[LogRecord]:
    """An endless stream of simulated events (and, if asked, one hostile record every N).

    With ``retime`` each chunk of shoppers is shifted so its newest event is
    "now" when the chunk starts, so events pass the worker's timestamp checks
    and the model sees realistic gaps. Unique event ids per run keep replays
    of the demo on a shared broker apart.
    """
    from model_export.simulator.catalogue import build_catalogue
    from model_export.simulator.engine import Config, simulate_user

    catalogue = build_catalogue(shop.items, shop.seed)
    run = f"{int(time.time() * 1000):x}"
    sent = 0
    user = first_user
    while True:
        cfg = Config(users=user + shop.users_per_chunk, items=shop.items, days=shop.days,
                     seed=shop.seed)
        chunk: list[dict[str, Any]] = []
        for u in range(user, user + shop.users_per_chunk):
            chunk.extend(orjson.loads(line) for line in simulate_user(catalogue, cfg, u).lines)
        user += shop.users_per_chunk
        chunk.sort(key=lambda e: (e["ts"], e["user_id"]))
        shift = int(time.time() * 1000) - chunk[-1]["ts"] if retime else 0
        for event in chunk:
            event["ts"] += shift
            event["event_id"] = f"{event['event_id']}-{run}"
            sent += 1
            if hostile_every and sent % hostile_every == 0:
                yield LogRecord(HOSTILE[(sent // hostile_every) % len(HOSTILE)], None, None)
            yield LogRecord(orjson.dumps(event), event["user_id"], event["ts"])
