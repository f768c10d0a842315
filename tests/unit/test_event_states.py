"""The state cache: a user's next event scored by the incremental graph, like the full one."""

import shutil

import numpy as np
import orjson
import pytest

from streams.bundle import MANIFEST, NEWEST_MODEL_FILE, BundleError, load_bundle
from streams.contracts import Event
from streams.encoding import Encoder
from streams.event_states import EventStateCache
from streams.scorer import Scorer
from streams.window import UserWindow

DAY_MS = 86_400_000


@pytest.fixture(scope="module")
def bundle(tiny_bundle):
    bundle = load_bundle(tiny_bundle)
    assert bundle.newest_model_path is not None, "the export writes the incremental graph"
    return bundle


def histories(bundle, n_users, n_events):
    """Per user, the packed window after each of their events (oldest first)."""
    encoder = Encoder(bundle.spec, bundle.items, bundle.categories)
    items = bundle.items.tokens
    out = {}
    for u in range(n_users):
        window, steps = UserWindow.empty(encoder), []
        for n in range(n_events):
            kind = ("browse", "search", "click", "add_to_cart")[(n + u) % 4]
            event = Event(event_id=f"e-{u}-{n}", user_id=f"u-{u}", type=kind,
                          ts_ms=1_760_000_000_000 + 60_000 * n,
                          item_id=None if kind == "search" else items[(u * 5 + n) % len(items)],
                          query="red shoes" if kind == "search" else None)
            window = window.append(event, encoder, now_ms=0, ttl_ms=DAY_MS)
            steps.append(window.body)
        out[f"u-{u}"] = steps
    return out


def assert_same(got, want):
    np.testing.assert_allclose(got.next_action, want.next_action, atol=1e-5)
    np.testing.assert_allclose(got.top_scores, want.top_scores, atol=1e-5)
    np.testing.assert_allclose(got.purchase_probability, want.purchase_probability, atol=1e-5)
    np.testing.assert_allclose(np.log1p(got.next_event_seconds),
                               np.log1p(want.next_event_seconds), atol=1e-4)


def test_each_users_next_event_reuses_the_cached_states_and_scores_the_same(bundle):
    # 40 users who joined at different times: batches mix lengths (several groups per call).
    users = histories(bundle, n_users=40, n_events=bundle.spec.max_len + 3)
    cached = Scorer(bundle, top_k=5, state_cache_users=100)
    plain = Scorer(bundle, top_k=5)
    reused = []
    for step in range(bundle.spec.max_len + 3):
        batch = [(u, steps[step - (i % 7)]) for i, (u, steps) in enumerate(users.items())
                 if step - (i % 7) >= 0]
        names, windows = [u for u, _ in batch], [w for _, w in batch]
        got = cached.score(windows, names)
        assert_same(got, plain.score(windows))
        reused.append(got.reused)
    assert reused[0] == 0  # nothing cached yet
    # Every window that grew by one event reuses; full windows slide and do not.
    max_len = bundle.spec.max_len
    assert reused[5] == sum(1 for i in range(40) if 5 - (i % 7) >= 1)
    assert reused[max_len + 2] == sum(1 for i in range(40) if max_len + 2 - (i % 7) < max_len)
    assert cached.states is not None and cached.states.hits == sum(reused)


def test_windows_that_are_not_the_cached_one_plus_an_event_get_the_full_graph(bundle):
    steps = histories(bundle, n_users=1, n_events=12)["u-0"]
    size = Encoder(bundle.spec, bundle.items, bundle.categories).itemsize
    cached = Scorer(bundle, top_k=5, state_cache_users=10)
    plain = Scorer(bundle, top_k=5)
    cached.score([steps[5]], ["u-0"])
    others = [
        steps[5],  # the same window again (a redelivery)
        steps[7],  # two events later
        steps[6][size:],  # one more event but the oldest gone (slid)
        steps[4],  # an older prefix
    ]
    for window in others:
        got = cached.score([window], ["u-0"])
        assert got.reused == 0
        assert_same(got, plain.score([window]))
        cached.score([steps[5]], ["u-0"])  # back to the cached window
    assert cached.score([steps[6]], ["u-0"]).reused == 1
    assert cached.score([steps[7]], ["u-1"]).reused == 0  # another user's window


def test_a_user_twice_in_one_batch_is_scored_right_and_keeps_the_later_window(bundle):
    steps = histories(bundle, n_users=1, n_events=8)["u-0"]
    cached = Scorer(bundle, top_k=5, state_cache_users=10)
    plain = Scorer(bundle, top_k=5)
    cached.score([steps[3]], ["u-0"])
    got = cached.score([steps[4], steps[5]], ["u-0", "u-0"])
    assert got.reused == 1  # the first; the second's earlier window is scored in this batch
    assert_same(got, plain.score([steps[4], steps[5]]))
    assert cached.score([steps[6]], ["u-0"]).reused == 1


def test_the_cache_is_bounded_and_forgets():
    cache = EventStateCache(capacity=2, max_events=4)
    state = np.zeros((1, 1, 2), np.float32)
    cache.keep("a", b"r1", state)
    cache.keep("b", b"r1", state)
    assert cache.earlier("a", b"r1r2", 2) is not None
    cache.keep("a", b"r1r2", np.zeros((2, 1, 2), np.float32))  # "a" scored most recently
    cache.keep("c", b"r1", state)  # evicts "b", the least recently scored
    assert len(cache) == 2 and cache.earlier("b", b"r1r2", 2) is None
    assert cache.earlier("a", b"r1r2r3", 2) is not None
    cache.forget("a")
    assert cache.earlier("a", b"r1r2r3", 2) is None
    cache.keep("c", b"r1r2r3r4", np.zeros((4, 1, 2), np.float32))  # full: its next one slides
    assert len(cache) == 0


def test_without_a_cache_the_users_change_nothing(bundle):
    steps = histories(bundle, n_users=1, n_events=4)["u-0"]
    scorer = Scorer(bundle, top_k=5, state_cache_users=0)
    assert scorer.states is None
    scorer.score([steps[2]], ["u-0"])
    assert scorer.score([steps[3]], ["u-0"]).reused == 0


def test_a_manifest_that_does_not_name_the_incremental_graph_is_refused(bundle, tmp_path):
    shutil.copytree(bundle.path, tmp_path / "bundle")
    manifest = orjson.loads((tmp_path / "bundle" / MANIFEST).read_bytes())
    del manifest["newest_model"], manifest["files"][NEWEST_MODEL_FILE]
    manifest["outputs"] = manifest["outputs"][:5]
    (tmp_path / "bundle" / MANIFEST).write_bytes(orjson.dumps(manifest))
    # model.onnx still returns the event states: the scorer says what it expected.
    with pytest.raises(BundleError, match="event_states"):
        Scorer(load_bundle(tmp_path / "bundle"), state_cache_users=10)
