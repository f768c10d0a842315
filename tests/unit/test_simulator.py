"""The shop simulator: deterministic, valid, shop-like, and its oracle agrees with its sampler."""

import gzip
import random
import time
from collections import Counter, defaultdict
from statistics import median

import numpy as np
import orjson
import pytest

from model_export.simulator import END_MS, simulate
from model_export.simulator.catalogue import build_catalogue
from model_export.simulator.engine import Config, simulate_user
from model_export.simulator.funnel import ITEM_ACTIONS, PURCHASE
from model_export.simulator.oracle import predict
from model_export.simulator.queries import typo
from model_export.simulator.shop_words import DEPARTMENTS
from model_export.simulator.shopper import Shopper
from model_export.simulator.users import Normals
from streams.cli import main
from streams.contracts import ACTIONS, Event, decode_event

NOW_MS = int(time.time() * 1000)


@pytest.fixture(scope="module")
def sim():
    return simulate(150, 400, 30, seed=3, oracle=True, rollouts=24)


@pytest.fixture(scope="module")
def events(sim):
    return sim.events


@pytest.fixture(scope="module")
def by_user(events):
    users = defaultdict(list)
    for e in events:
        users[e["user_id"]].append(e)
    return users


def test_same_seed_same_bytes_whatever_the_number_of_processes():
    one = simulate(140, 120, 10, seed=11)
    again = simulate(140, 120, 10, seed=11)
    parallel = simulate(140, 120, 10, seed=11, workers=2)
    assert one.lines == again.lines == parallel.lines
    assert simulate(140, 120, 10, seed=12).lines != one.lines


def test_cli_writes_identical_gzip_files_for_a_seed(tmp_path):
    paths = [tmp_path / "a.jsonl.gz", tmp_path / "b.jsonl.gz"]
    for path in paths:
        assert main(["generate", "--users", "30", "--items", "60", "--days", "5", "--seed", "4",
                     "--out", str(path), "--oracle-out", str(path) + ".oracle",
                     "--rollouts", "8", "--no-progress"]) == 0
    assert paths[0].read_bytes() == paths[1].read_bytes()
    lines = gzip.decompress(paths[0].read_bytes()).splitlines()
    assert len(lines) >= 30 * 3
    oracle = (tmp_path / "a.jsonl.gz.oracle").read_bytes().splitlines()
    assert len(oracle) == 2 * 30


def test_every_event_passes_the_contract_and_ids_are_unique(sim, events):
    ids = set()
    for line in sim.lines:
        decoded = decode_event(line.rstrip(b"\n"), now_ms=NOW_MS)
        assert isinstance(decoded, Event), (decoded, line)
        ids.add(decoded.event_id)
        if decoded.item_id is not None:
            assert decoded.price is not None and decoded.price > 0
            assert decoded.category is not None
        assert decoded.session_id
    assert len(ids) == len(events)


def test_events_are_sorted_by_time_and_end_in_the_past(events):
    ts = [e["ts"] for e in events]
    assert ts == sorted(ts)
    assert ts[0] >= END_MS - 30 * 86_400_000
    # Visits start before the end; the last one may run a few minutes past it.
    assert ts[-1] < END_MS + 3_600_000 < NOW_MS


def test_every_user_has_enough_history_for_a_time_split(by_user):
    assert len(by_user) == 150
    assert min(len(v) for v in by_user.values()) >= 3


def test_funnel_order_add_follows_a_view_and_purchase_follows_an_add(by_user):
    for history in by_user.values():
        seen_in_session = defaultdict(set)
        carted = set()
        for e in history:
            kind, item = e["type"], e.get("item_id")
            if kind == "add_to_cart":
                assert item in seen_in_session[e["session_id"]]
                carted.add(item)
            if kind == "purchase":
                assert item in carted
            if item is not None:
                seen_in_session[e["session_id"]].add(item)


def test_the_funnel_narrows(events):
    counts = Counter(e["type"] for e in events)
    assert counts["click"] > counts["add_to_cart"] > 0
    assert counts["add_to_cart"] >= 0.8 * counts["purchase"] > 0
    assert counts["search"] > 0 and counts["browse"] > 0
    sessions = {e["session_id"] for e in events}
    bought = {e["session_id"] for e in events if e["type"] == "purchase"}
    # Most visits end without a purchase, as in every shop.
    assert 0.02 < len(bought) / len(sessions) < 0.4


def test_item_popularity_follows_a_power_law():
    sim = simulate(300, 1000, 20, seed=5)
    counts = Counter(e["item_id"] for e in sim.events if "item_id" in e)
    total = sum(counts.values())
    top = sum(c for _, c in counts.most_common(10))  # the top 1% of 1000 items
    assert top / total > 0.08  # far above the 1% a uniform shop would give


def _vocabulary(dep):
    words = set()
    for group in (dep.nouns, dep.facets, dep.modifiers):
        for phrase in group:
            words.update(phrase.split())
    return words


def test_search_queries_come_from_a_category_vocabulary(events):
    vocabularies = [_vocabulary(d) for d in DEPARTMENTS]
    queries = [e["query"] for e in events if e["type"] == "search"]
    assert len(queries) > 200
    clean = 0
    for q in queries:
        words = q.split()
        # All words but at most one (a typo) belong to one department's vocabulary.
        best = max(sum(w in v for w in words) for v in vocabularies)
        assert best >= len(words) - 1, q
        clean += best == len(words)
    assert 0.6 < clean / len(queries) < 0.99  # some typos, but not everywhere
    orders = Counter(tuple(sorted(q.split())) for q in queries)
    assert any(len({q for q in queries if tuple(sorted(q.split())) == k}) > 1 for k in orders)


def test_typos_look_like_typing_mistakes():
    rng = random.Random(1)
    for word in ("espresso", "running", "cordless"):
        for _ in range(50):
            out = typo(word, rng)
            assert abs(len(out) - len(word)) <= 1
            assert out[0] == word[0]


def test_a_click_after_a_search_is_usually_in_the_searched_category(by_user):
    vocab = {d.name: _vocabulary(d) for d in DEPARTMENTS}
    hits = total = 0
    for history in by_user.values():
        for a, b in zip(history, history[1:], strict=False):
            if a["type"] == "search" and b["type"] == "click" and a["session_id"] == b[
                    "session_id"]:
                total += 1
                words = set(a["query"].split())
                hits += len(words & vocab[b["category"]]) >= len(words) - 1
    assert total > 100
    assert hits / total > 0.7


def test_gaps_are_seconds_inside_a_visit_and_hours_between_visits(by_user):
    inside, between = [], []
    for history in by_user.values():
        for a, b in zip(history, history[1:], strict=False):
            gap = (b["ts"] - a["ts"]) / 1000
            (inside if a["session_id"] == b["session_id"] else between).append(gap)
    assert 3 < median(inside) < 120
    assert max(inside) < 3600
    assert median(between) > 3 * 3600
    assert min(between) >= 30 * 60


def test_visits_follow_a_daily_rhythm(events):
    starts = {}
    for e in events:
        starts.setdefault(e["session_id"], e["ts"])
    hours = Counter((ts // 3_600_000) % 24 for ts in starts.values())
    night = sum(hours[h] for h in range(1, 6))
    evening = sum(hours[h] for h in range(17, 22))
    assert evening > 4 * night


def test_consumables_are_bought_again(by_user):
    consumables = {d.name for d in DEPARTMENTS if d.consumable}
    repeats = 0
    for history in by_user.values():
        bought = Counter(e["item_id"] for e in history if e["type"] == "purchase"
                         and e["category"] in consumables)
        repeats += sum(1 for c in bought.values() if c > 1)
    assert repeats > 0


def test_users_have_favourite_categories(by_user):
    shares = []
    for history in by_user.values():
        cats = Counter(e["category"] for e in history if "category" in e)
        if sum(cats.values()) >= 20:
            shares.append(cats.most_common(1)[0][1] / sum(cats.values()))
    # 24 departments: a user without tastes would put about 1/24 in the top one.
    assert median(shares) > 0.3


def test_catalogue_structure():
    cat = build_catalogue(500, 1)
    assert len(set(cat.item_ids)) == 500
    assert np.isclose(cat.popularity.sum(), 1.0)
    same_department = 0
    for i in range(cat.n_items):
        neighbours = cat.coview[i].items
        assert i not in neighbours
        same_department += sum(cat.item_department[j] == cat.item_department[i]
                               for j in neighbours) / len(neighbours)
    assert same_department / cat.n_items > 0.7


# -- the oracle ---------------------------------------------------------------------------


def test_oracle_covers_each_users_last_two_events(sim, by_user):
    records = sim.oracle
    assert len(records) == 2 * len(by_user)
    for rec in records:
        history = by_user[rec["user_id"]]
        assert rec["event_id"] in {history[-1]["event_id"], history[-2]["event_id"]}
        assert rec["horizon_seconds"] == 86400


def test_oracle_distributions_are_probabilities(sim):
    for rec in sim.oracle:
        actions = rec["next_action"]
        assert list(actions) == list(ACTIONS)
        assert 0.999 <= sum(actions.values()) <= 1.0 + 1e-9
        ps = [x["p"] for x in rec["next_items"]]
        assert 0 < len(ps) <= 100
        assert sum(ps) <= 1.0 + 1e-9
        assert ps == sorted(ps, reverse=True)
        assert 0.0 <= rec["purchase_probability"] <= 1.0


def test_oracle_contains_the_actual_next_item_and_action_often(sim, events):
    by_id = {e["event_id"]: e for e in events}
    hit = with_item = top_action = 0
    for rec in sim.oracle:
        target = by_id[rec["event_id"]]
        top_action += max(rec["next_action"], key=rec["next_action"].get) == target["type"]
        if "item_id" in target:
            with_item += 1
            hit += target["item_id"] in {x["item_id"] for x in rec["next_items"]}
    assert hit / with_item > 0.75
    assert top_action / len(sim.oracle) > 0.4


def test_oracle_purchase_probability_separates_buyers(sim, by_user):
    """Users who do buy within 24 h after the history's end got a higher probability."""
    yes, no = [], []
    for rec in sim.oracle:
        history = by_user[rec["user_id"]]
        k = next(i for i, e in enumerate(history) if e["event_id"] == rec["event_id"])
        t0 = history[k - 1]["ts"]
        label = any(e["type"] == "purchase" and t0 < e["ts"] <= t0 + 86_400_000
                    for e in history[k:])
        (yes if label else no).append(rec["purchase_probability"])
    assert yes and no
    assert np.mean(yes) > np.mean(no) + 0.2


def test_oracle_is_deterministic():
    a = simulate(20, 80, 6, seed=9, oracle=True, rollouts=8)
    b = simulate(20, 80, 6, seed=9, oracle=True, rollouts=8)
    assert a.oracle_lines == b.oracle_lines


def _states_inside_visits(cat, cfg, users):
    """(shopper, state before an event) pairs taken in the middle of visits."""
    picks = []
    for user in users:
        shopper = Shopper.new(cat, cfg.seed, user, cfg.start_ms, cfg.end_ms)
        for position in range(400):
            if position in (5, 9, 14) and shopper.s.in_session:
                picks.append(shopper.clone(random.Random(position), Normals(0)))
            if shopper.step() is None:
                break
    return picks


def test_oracle_matches_what_the_sampler_draws():
    """The oracle's distributions are those the sampler draws from (total variation)."""
    cat = build_catalogue(150, 2)
    cfg = Config(users=6, items=150, days=30, seed=2)
    for shopper in _states_inside_visits(cat, cfg, range(6))[:6]:
        pred = predict(shopper, random.Random(1), rollouts=8)
        actions = np.zeros(len(ACTIONS))
        items = np.zeros(cat.n_items)
        rng = random.Random(7)
        nrng = Normals(7)
        for _ in range(3000):
            ev = shopper.clone(rng, nrng).step()
            if ev is None:
                continue
            actions[ev.action] += 1
            if ev.action in ITEM_ACTIONS:
                items[ev.item] += 1
        actions /= actions.sum()
        assert 0.5 * np.abs(actions - np.array(pred.next_action)).sum() < 0.05
        if items.sum() > 500:
            items /= items.sum()
            assert 0.5 * np.abs(items - pred.items).sum() < 0.12


def test_oracle_purchase_probability_matches_rollouts_of_the_log():
    """On many simulated futures, the oracle's probability is the purchase frequency."""
    cat = build_catalogue(150, 4)
    cfg = Config(users=40, items=150, days=30, seed=4)
    picks = _states_inside_visits(cat, cfg, range(40))[:40]
    predicted = observed = 0.0
    rng = random.Random(3)
    nrng = Normals(3)
    for shopper in picks:
        predicted += predict(shopper, random.Random(5), rollouts=64).purchase_probability
        look = shopper.clone(rng, nrng)
        t0 = look.s.now
        while (ev := look.step()) is not None and ev.ts <= t0 + 86_400_000:
            if ev.action == PURCHASE:
                observed += 1
                break
    assert abs(predicted - observed) < 0.25 * len(picks)


def test_simulate_user_is_independent_of_other_users():
    cat = build_catalogue(100, 6)
    cfg = Config(users=10, items=100, days=10, seed=6)
    alone = simulate_user(cat, cfg, 7)
    in_run = [line for line in simulate(10, 100, 10, seed=6).lines
              if orjson.loads(line)["user_id"] == "u-7"]
    assert sorted(alone.lines) == sorted(in_run)
