"""The ONNX scorer on a real (tiny) trained bundle, and the bundle checks that guard it."""

import json
import shutil
from pathlib import Path

import jsonschema
import numpy as np
import orjson
import pytest

from streams.bundle import BundleError, load_bundle
from streams.contracts import ACTIONS, Event, Prediction
from streams.encoding import Encoder
from streams.scorer import MIN_GROUP, Scorer, _length_groups
from streams.stepping import Run, fresh_groups
from streams.window import UserWindow

SCHEMAS = Path(__file__).parents[2] / "streams" / "schemas"
DAY_MS = 86_400_000


@pytest.fixture(scope="module")
def bundle(tiny_bundle):
    return load_bundle(tiny_bundle)


def user_windows(bundle, n_users=5, n_events=7):
    encoder = Encoder(bundle.spec, bundle.items, bundle.categories)
    items = bundle.items.tokens
    events, windows = [], []
    for u in range(n_users):
        window = UserWindow.empty(encoder)
        for n in range(n_events + u):
            kind = ("browse", "search", "click", "add_to_cart")[n % 4]
            event = Event(event_id=f"e-{u}-{n}", user_id=f"u-{u}", type=kind,
                          ts_ms=1_760_000_000_000 + 60_000 * n,
                          item_id=None if kind == "search" else items[(u * 7 + n) % len(items)],
                          query="red shoes" if kind == "search" else None)
            window = window.append(event, encoder, now_ms=0, ttl_ms=DAY_MS)
        events.append(event)
        windows.append(window.records)
    return events, windows


def test_predictions_follow_the_contract(bundle):
    scorer = Scorer(bundle, top_k=10)
    events, windows = user_windows(bundle)
    messages, scores = scorer.predict(events, windows, scored_at=123)
    # The bundle's graph can return 20 items; the scorer asks it for the 10 it sends.
    assert bundle.top_k == 20 and scores.top_items.shape == (len(events), 10)
    schema = json.loads((SCHEMAS / "prediction.v1.json").read_text())
    assert len(messages) == len(events)
    for event, message in zip(events, messages):
        jsonschema.validate(orjson.loads(message), schema)
        prediction = Prediction.from_json(message)
        assert prediction.event_id == event.event_id and prediction.user_id == event.user_id
        assert prediction.model_version == bundle.model_version
        assert sum(prediction.next_action.values()) == pytest.approx(1.0, abs=1e-4)
        assert list(prediction.next_action) == list(ACTIONS)
        assert len(prediction.next_items) == 10
        scores = [i.score for i in prediction.next_items]
        assert scores == sorted(scores, reverse=True)
        assert {i.item_id for i in prediction.next_items} <= set(bundle.items.tokens)


def test_a_batch_scores_each_window_as_if_alone(bundle):
    scorer = Scorer(bundle, top_k=5)
    events, windows = user_windows(bundle)
    together = scorer.score(windows)
    for row, window in enumerate(windows):
        alone = scorer.score([window])
        np.testing.assert_allclose(alone.next_action[0], together.next_action[row], atol=1e-5)
        np.testing.assert_array_equal(alone.top_items[0][:5], together.top_items[row][:5])


def test_a_batch_of_mixed_lengths_is_scored_in_groups_as_if_each_window_were_alone(bundle):
    # 40 users with 1..20 events: more than one length group, in a shuffled order.
    events, windows = user_windows(bundle, n_users=40, n_events=1)
    windows = [w[-(1 + (u * 7) % 20):] for u, w in enumerate(windows)]
    packed = [w.tobytes() for w in windows]
    scorer = Scorer(bundle, top_k=5)
    lengths = scorer._lengths(packed)
    assert lengths.tolist() == [len(w) for w in windows]
    groups = _length_groups(lengths, bundle.spec.max_len)
    assert len(groups) > 1 and all(len(g) >= MIN_GROUP for g in groups)
    assert sorted(np.concatenate(groups).tolist()) == list(range(len(windows)))
    together = scorer.score(packed)
    for row, window in enumerate(packed):
        alone = scorer.score([window])
        np.testing.assert_allclose(alone.next_action[0], together.next_action[row], atol=1e-5)
        np.testing.assert_allclose(alone.top_scores[0], together.top_scores[row], atol=1e-5)
        np.testing.assert_allclose(alone.purchase_probability, together.purchase_probability[row],
                                   atol=1e-5)


def test_top_k_beyond_the_graph_is_refused(bundle):
    with pytest.raises(BundleError, match="SHOPCAST_TOP_K"):
        Scorer(bundle, top_k=bundle.top_k + 1)


@pytest.fixture
def bundle_copy(tiny_bundle, tmp_path):
    target = tmp_path / "bundle"
    shutil.copytree(tiny_bundle, target)
    return target


def test_a_corrupt_model_file_is_refused(bundle_copy):
    model = bundle_copy / "model.onnx"
    data = bytearray(model.read_bytes())
    data[len(data) // 2] ^= 0xFF
    model.write_bytes(bytes(data))
    with pytest.raises(BundleError, match="model.onnx is corrupt"):
        load_bundle(bundle_copy)


def test_a_changed_vocabulary_is_refused(bundle_copy):
    (bundle_copy / "items.json").write_text('["x", "y"]')
    with pytest.raises(BundleError, match="items.json"):
        load_bundle(bundle_copy)


def test_a_bundle_for_another_encoding_is_refused(bundle_copy):
    manifest = json.loads((bundle_copy / "manifest.json").read_text())
    manifest["encoding"]["spec"]["actions"] = ["view", "buy"]
    (bundle_copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match="actions"):
        load_bundle(bundle_copy)


def test_a_missing_bundle_says_what_to_do(tmp_path):
    with pytest.raises(BundleError, match="SHOPCAST_BUNDLE_PATH"):
        load_bundle(tmp_path)


def user_histories(bundle, n_users=3, n_events=30):
    """Each user's windows after every event: (user, packed window) in time order."""
    encoder = Encoder(bundle.spec, bundle.items, bundle.categories)
    items = bundle.items.tokens
    history = []
    for u in range(n_users):
        window = UserWindow.empty(encoder)
        for n in range(n_events):
            kind = ("browse", "click", "search", "add_to_cart")[(n + u) % 4]
            event = Event(event_id=f"s-{u}-{n}", user_id=f"u-{u}", type=kind,
                          ts_ms=1_760_000_000_000 + 30_000 * n,
                          item_id=None if kind == "search" else items[(u * 5 + n * 3) % len(items)],
                          query="blue lamp" if kind == "search" else None)
            window = window.append(event, encoder, now_ms=0, ttl_ms=DAY_MS,
                                   max_len=bundle.spec.max_len)
            history.append((n, f"u-{u}", window.body))
    history.sort(key=lambda h: h[0])  # interleave the users, each in order
    return [(user, body) for _, user, body in history]


def test_held_states_give_the_predictions_of_whole_windows(bundle):
    # The tiny bundle's windows hold 20 events and its attention reads 10: every event
    # is stepped, each user's first from an empty state and every later one from the
    # state its previous one left, in batches where a user has one event or several,
    # and long after the windows are full and slide.
    assert bundle.step_path is not None and bundle.attention_window == 10
    history = user_histories(bundle)
    whole = Scorer(bundle, top_k=10)
    held = Scorer(bundle, top_k=10, state_users=100)
    stepped = 0
    for start, size in ((0, 3), (3, 1), (4, 9), (13, 30), (43, 47)):
        users = [user for user, _ in history[start:start + size]]
        windows = [body for _, body in history[start:start + size]]
        want, got = whole.score(windows), held.score(windows, users)
        for name in ("next_action", "top_scores", "purchase_probability"):
            assert np.allclose(getattr(got, name), getattr(want, name), atol=1e-5), name
        assert np.array_equal(got.top_items[:, :3], want.top_items[:, :3])
        stepped += got.stepped
    assert stepped == len(history)


def test_users_with_many_and_few_events_in_a_batch_are_stepped_in_separate_calls(bundle):
    # One user with 33 new events and 40 users with one each: one call would pad every
    # user to 33 events. Grouped by their number of events, two calls give the
    # predictions of whole windows.
    history = user_histories(bundle, n_users=41, n_events=36)
    by_user: dict[str, list[bytes]] = {}
    for user, body in history:
        by_user.setdefault(user, []).append(body)
    first = [(user, windows[0]) for user, windows in by_user.items()]
    batch = [("u-0", w) for w in by_user["u-0"][1:34]] + \
        [(user, windows[1]) for user, windows in by_user.items() if user != "u-0"]
    whole = Scorer(bundle, top_k=10)
    held = Scorer(bundle, top_k=10, state_users=100)
    held.score([w for _, w in first], [u for u, _ in first])
    calls = []
    run = held.step.run
    held.step.run = lambda names, feeds: calls.append(feeds["fresh"].shape) or run(names, feeds)
    got = held.score([w for _, w in batch], [u for u, _ in batch])
    want = whole.score([w for _, w in batch])
    assert sorted(calls) == [(1, 33), (40, 1)] and got.stepped == len(batch)
    for name in ("next_action", "top_scores", "purchase_probability"):
        assert np.allclose(getattr(got, name), getattr(want, name), atol=1e-5), name
    assert np.array_equal(got.top_items[:, :3], want.top_items[:, :3])


def test_runs_are_grouped_by_their_number_of_events_and_small_groups_join_larger_ones():
    def runs(*sizes):
        return [Run(f"u-{i}", np.zeros(0), b"", rows=list(range(k))) for i, k in enumerate(sizes)]

    def shape(groups):
        return [sorted(len(run.rows) for run in group) for group in groups]

    assert shape(fresh_groups(runs(3, 1, 2))) == [[1, 2, 3]]  # too few events to split
    assert shape(fresh_groups(runs(*[1] * 40, 33))) == [[1] * 40, [33]]
    # 3 and 4 events pad to 4; 5 to 8 more; the 20 events of 17+ join the group before.
    sizes = [3] * 6 + [4] * 4 + [5] * 8 + [20]
    assert shape(fresh_groups(runs(*sizes))) == [[3] * 6 + [4] * 4, [5] * 8 + [20]]


def test_a_window_that_is_not_the_held_one_plus_an_event_is_scored_whole(bundle):
    history = [body for user, body in user_histories(bundle, n_users=1) if user == "u-0"]
    scorer = Scorer(bundle, top_k=10, state_users=100)
    scorer.score([history[10]], ["u-0"])
    assert scorer.score([history[12]], ["u-0"]).stepped == 0  # an event in between missed
    assert scorer.score([history[12]], ["u-0"]).stepped == 0  # the same window again
    assert scorer.score([history[13]], ["u-0"]).stepped == 1
    scorer.forget("u-0")
    assert scorer.score([history[14]], ["u-0"]).stepped == 0


def test_a_user_with_earlier_events_but_no_held_state_is_scored_whole_first(bundle):
    # After a restart a worker holds no states, but the table holds the users' windows:
    # the first event of each is scored from its whole window, the next from its state.
    history = [body for user, body in user_histories(bundle, n_users=1) if user == "u-0"]
    scorer = Scorer(bundle, top_k=10, state_users=100)
    whole = Scorer(bundle, top_k=10)
    calls = []
    run = scorer.session.run
    scorer.session.run = lambda names, feeds: calls.append(len(feeds["items"])) or run(names,
                                                                                     feeds)
    got = scorer.score(history[5:8], ["u-0"] * 3)
    assert calls == [1] and got.stepped == 2
    want = whole.score(history[5:8])
    assert np.allclose(got.next_action, want.next_action, atol=1e-5)
    assert np.array_equal(got.top_items[:, :3], want.top_items[:, :3])


def test_no_state_is_held_when_it_is_turned_off(bundle):
    history = user_histories(bundle, n_users=1)
    scorer = Scorer(bundle, top_k=10, state_users=0)
    windows = [body for _, body in history[:5]]
    assert scorer.states is None and scorer.score(windows, ["u-0"] * 5).stepped == 0
