"""Model hot swap (streams/hot_swap.py): watch, verify, refuse, swap, re-encode old windows."""

from __future__ import annotations

import asyncio
from pathlib import Path
from types import SimpleNamespace

import orjson
import pytest

from streams.bundle import ITEMS_FILE, MANIFEST, load_bundle
from streams.contracts import Event
from streams.encoding import Encoder, EncodingSpec, Vocabulary
from streams.hot_swap import (
    BundleWatcher,
    WindowRemapper,
    between_batches,
    bundle_identity,
    prepare,
    watch,
)
from streams.metrics import WorkerMetrics
from streams.online import OnlineAccuracy
from streams.pipeline import Incoming, Pipeline, Ready
from streams.settings import load_settings
from streams.window import UserWindow
from tests.model_dirs import corrupt_copy, make_models, mismatched_copy, switch

NOW = 1_764_400_000_000
DAY_MS = 86_400_000


@pytest.fixture
def models(tiny_bundle, tmp_path):
    """A model directory: bundles ``a`` and ``b`` (another item vocabulary) and ``current``."""
    return make_models(tiny_bundle, tmp_path / "models")


def encoder_of(path: Path) -> Encoder:
    bundle = load_bundle(path)
    return Encoder(bundle.spec, bundle.items, bundle.categories)


def click(n, item, user="u-1"):
    return orjson.dumps({"event_id": f"e-{n}", "user_id": user, "type": "click",
                         "ts": NOW - 100_000 + n * 1000, "item_id": item, "category": "c-mug"})


def window_items(stored: bytes, encoder: Encoder) -> list[str | None]:
    window = UserWindow.from_bytes(stored, encoder)
    return [encoder.items.token(int(i)) for i in window.records["item"]]


# --- encoding tags and re-encoding windows -----------------------------------------------------

def test_the_tag_covers_the_spec_and_both_vocabularies():
    items, cats = Vocabulary(["a", "b"]), Vocabulary(["x"])
    base = Encoder(EncodingSpec(), items, cats).vocab_tag
    assert Encoder(EncodingSpec(), Vocabulary(["a", "b"]), Vocabulary(["x"])).vocab_tag == base
    assert Encoder(EncodingSpec(), Vocabulary(["b", "a"]), cats).vocab_tag != base
    assert Encoder(EncodingSpec(), items, Vocabulary(["y"])).vocab_tag != base
    assert Encoder(EncodingSpec(query_seed=1), items, cats).vocab_tag != base


def test_an_old_window_is_re_encoded_with_the_same_item_ids():
    tokens = [f"sku-{i}" for i in range(10)]
    a = Encoder(EncodingSpec(max_len=20), Vocabulary(tokens), Vocabulary(["c-mug"]))
    # b: another order, one id fewer (sku-0), one new.
    b = Encoder(EncodingSpec(max_len=20), Vocabulary(list(reversed(tokens[1:])) + ["sku-x"]),
                Vocabulary(["c-lamp", "c-mug"]))
    known, dropped = tokens[5:8], tokens[0]
    table: dict[bytes, bytes] = {}
    old = Pipeline(a, window_length=None, ttl_ms=DAY_MS, max_future_ms=DAY_MS)
    for n, item in enumerate([*known, dropped]):
        old.admit(Incoming(b"u-1", click(n, item), "t", 0, n), table, now_ms=NOW)
    before = window_items(table[b"u-1"], a)

    remapper = WindowRemapper()
    remapper.remember(a)
    new = Pipeline(b, window_length=None, ttl_ms=DAY_MS, max_future_ms=DAY_MS)
    new.foreign = lambda stored: remapper.adopt(stored, b, new.window_length)
    out = new.admit(Incoming(b"u-1", click(9, known[0]), "t", 0, 9), table, now_ms=NOW)
    assert isinstance(out, Ready) and out.window_length == 5
    window = UserWindow.from_bytes(table[b"u-1"], b)
    # Same ids in the same order under the new vocabularies; the one b lacks becomes
    # "unknown" (None here) like any id the model never saw.
    assert before == [*known, dropped]
    assert window_items(table[b"u-1"], b) == [*known, None, known[0]]
    assert [b.categories.token(int(c)) for c in window.records["category"]] == ["c-mug"] * 5
    assert window.vocab_tag == b.vocab_tag


def test_a_window_from_an_unknown_encoding_starts_afresh(models):
    a, b = encoder_of(models / "a"), encoder_of(models / "b")
    table: dict[bytes, bytes] = {}
    old = Pipeline(a, window_length=None, ttl_ms=DAY_MS, max_future_ms=DAY_MS)
    for n in range(3):
        old.admit(Incoming(b"u-1", click(n, a.items.tokens[n]), "t", 0, n), table, now_ms=NOW)
    new = Pipeline(b, window_length=None, ttl_ms=DAY_MS, max_future_ms=DAY_MS)
    out = new.admit(Incoming(b"u-1", click(7, a.items.tokens[0]), "t", 0, 7), table, now_ms=NOW)
    assert out.window_length == 1  # the old indices are not read as b's items
    remapper = WindowRemapper()  # knows nothing
    assert remapper.adopt(table[b"u-1"], a, 20) is None


def test_windows_are_truncated_to_the_new_length_and_reserved_indices_kept(models):
    a, b = encoder_of(models / "a"), encoder_of(models / "b")
    window = UserWindow.empty(a)
    for n in range(12):
        window = window.append(Event(f"e{n}", "u", "search", NOW + n, query="red mug"), a,
                               now_ms=NOW, ttl_ms=DAY_MS)
    remapper = WindowRemapper()
    remapper.remember(a)
    adopted = remapper.adopt(window.to_bytes(), b, 5)
    assert len(adopted) == 5
    assert list(adopted.records["item"]) == [1] * 5  # "no item" stays "no item"
    assert adopted.records["query"].tolist() == window.records["query"][-5:].tolist()


# --- watching the model directory --------------------------------------------------------------

def make_watcher(models: Path) -> tuple[BundleWatcher, WorkerMetrics]:
    settings = load_settings(bundle_path=models / "current", top_k=5)
    metrics = WorkerMetrics()
    return BundleWatcher(settings, prepare(settings.bundle_path, settings), metrics), metrics


def swaps(metrics: WorkerMetrics, result: str) -> float:
    return metrics.registry.get_sample_value("shopcast_model_swaps_total", {"result": result})


def test_a_switched_link_is_loaded_and_handed_over_once(models):
    watcher, metrics = make_watcher(models)
    asyncio.run(watcher.check())
    assert watcher.pending is None  # nothing changed
    switch(models, "b")
    asyncio.run(watcher.check())
    assert watcher.pending is not None
    assert watcher.pending.bundle.model_version == "model-b"
    model = watcher.take()
    assert model.bundle.model_version == "model-b" and watcher.take() is None
    asyncio.run(watcher.check())
    assert watcher.pending is None  # already serving it
    assert swaps(metrics, "refused") == 0


@pytest.mark.parametrize("damage", ["corrupt model file", "vocabulary not in manifest",
                                    "model for more items than the vocabulary",
                                    "no manifest"])
def test_a_broken_bundle_is_refused_once_and_the_old_one_keeps_serving(models, damage, caplog):
    watcher, metrics = make_watcher(models)
    if damage == "model for more items than the vocabulary":
        broken = mismatched_copy(models, "b", "broken")
    else:
        broken = corrupt_copy(models, "b", "broken")
    if damage in ("corrupt model file", "model for more items than the vocabulary"):
        pass
    elif damage == "vocabulary not in manifest":
        (broken / ITEMS_FILE).write_bytes(b'["only-one"]')
    else:
        (broken / MANIFEST).unlink()
    switch(models, "broken")
    asyncio.run(watcher.check())
    asyncio.run(watcher.check())
    assert watcher.pending is None
    assert watcher.serving.bundle.path.name == "a"
    # No manifest is "not a bundle yet" (an operator still copying): waited for, not refused.
    assert swaps(metrics, "refused") == (0 if damage == "no manifest" else 1)
    if damage != "no manifest":
        assert "refused the new bundle" in caplog.text


def test_between_batches_installs_the_new_model_and_shows_it(models, tiny_bundle):
    settings = load_settings(bundle_path=models / "current", top_k=5)
    metrics = WorkerMetrics()
    first = prepare(settings.bundle_path, settings)
    pipeline = Pipeline(first.encoder, window_length=None, ttl_ms=DAY_MS, max_future_ms=DAY_MS)
    worker = SimpleNamespace(settings=settings, scorer=first.scorer, pipeline=pipeline,
                             metrics=metrics, online=OnlineAccuracy(metrics, horizon_ms=1))
    worker.models = watch(worker, first.bundle)
    between_batches(worker)
    assert worker.scorer is first.scorer  # nothing new yet
    switch(models, "b")
    asyncio.run(worker.models.check())
    between_batches(worker)
    assert worker.scorer.bundle.model_version == "model-b"
    assert worker.pipeline.encoder.vocab_tag != first.encoder.vocab_tag
    assert swaps(metrics, "loaded") == 1
    assert metrics.registry.get_sample_value(
        "shopcast_model_info", {"version": "model-b", "created_at": str(
            first.bundle.manifest["created_at"]), "horizon_seconds": str(
            first.bundle.horizon_seconds)}) == 1


def test_identity_changes_with_the_link_and_the_files(models):
    before = bundle_identity(models / "current")
    switch(models, "b")
    assert bundle_identity(models / "current") != before
    assert bundle_identity(models / "nowhere") is None


def test_windows_of_a_sibling_bundle_are_readable_after_a_restart(models):
    # A worker started on b (after a restart) still re-encodes a's windows: a is next to b.
    switch(models, "b")
    settings = load_settings(bundle_path=models / "current", top_k=5)
    watcher = BundleWatcher(settings, prepare(settings.bundle_path, settings), WorkerMetrics())
    assert encoder_of(models / "a").vocab_tag in watcher.remapper.encoders
