"""A tiny, self-contained shop log for fast tests of training, export and serving.

Structure a model can learn in seconds: within a session a user walks a chain
of items in one category (item k is usually followed by item k + 1), funnels
end in add_to_cart and purchase, and searches use the category's words.
"""

from __future__ import annotations

import random
from pathlib import Path

import orjson

START_MS = 1_764_000_000_000
WORDS = ["shoe", "lamp", "mug", "sock", "desk", "pen", "cap", "bag"]


def toy_events(users: int = 120, items: int = 48, seed: int = 7) -> list[dict]:
    """Event v1 dicts, sorted by time, for ``users`` users over ``items`` items."""
    rng = random.Random(seed)
    per_cat = max(1, items // len(WORDS))
    events = []
    for u in range(users):
        ts = START_MS + rng.randrange(0, 3600_000)
        n = 0
        for _session in range(rng.randint(1, 4)):
            cat = rng.randrange(len(WORDS))
            item = rng.randrange(per_cat)
            for step in range(rng.randint(3, 9)):
                ts += rng.randint(5, 120) * 1000
                n += 1
                base = {"event_id": f"u{u}-e{n}", "user_id": f"u{u}", "ts": ts,
                        "category": f"c-{WORDS[cat]}", "session_id": f"u{u}-s{_session}"}
                sku = f"sku-{cat * per_cat + item}"
                r = rng.random()
                if step == 0 and r < 0.3:
                    events.append({**base, "type": "search",
                                   "query": f"{WORDS[cat]} {rng.choice(['red', 'big', 'new'])}"})
                    continue
                if r < 0.1:
                    events.append({**base, "type": "add_to_cart", "item_id": sku})
                    if rng.random() < 0.5:
                        ts += 30_000
                        n += 1
                        events.append({**base, "event_id": f"u{u}-e{n}", "ts": ts,
                                       "type": "purchase", "item_id": sku})
                else:
                    events.append({**base, "type": "click" if r < 0.8 else "browse",
                                   "item_id": sku})
                item = (item + 1) % per_cat if rng.random() < 0.8 else rng.randrange(per_cat)
            ts += rng.randint(2, 48) * 3600_000
    events.sort(key=lambda e: e["ts"])
    return events


def write_toy_log(path: Path, **kwargs) -> Path:
    """Write :func:`toy_events` as JSON Lines and return the path."""
    path.write_bytes(b"".join(orjson.dumps(e) + b"\n" for e in toy_events(**kwargs)))
    return path
