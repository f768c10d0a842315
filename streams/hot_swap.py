"""Model hot swap: a new bundle placed in the model directory is served without a restart.

How an operator ships a model (docs/reliability.md has the commands)::

    models/
      2026-11-29T06-3f2a9c/     a complete bundle (shopcast export --out ...)
      2026-12-06T06-77b1e0/     the next one, copied in full *before* the switch
      current -> 2026-11-29T06-3f2a9c          SHOPCAST_BUNDLE_PATH=models/current

    ln -s 2026-12-06T06-77b1e0 models/current.new && mv -T models/current.new models/current

``mv -T`` renames the new link over the old one in one step, so a worker sees either the old
bundle or the new one, never a half-copied directory. Every ``SHOPCAST_BUNDLE_WATCH_SECONDS``
the worker's :class:`BundleWatcher` looks at where ``SHOPCAST_BUNDLE_PATH`` points (and at the
manifest and file times there); when that changed it loads and verifies the bundle in a
thread -- hashes, encoding, the ONNX graph's inputs and outputs, that it can serve this
worker's ``SHOPCAST_TOP_K`` and window length -- while the old one keeps serving. A bundle
that fails is refused: logged with the reason, counted in
``shopcast_model_swaps_total{result="refused"}``, and not tried again until it changes. A good
one waits in :attr:`BundleWatcher.pending` until :func:`between_batches` installs it at the
start of the next batch, so every batch is admitted and scored by one model, and
``shopcast_model_info`` and ``shopcast_model_swaps_total{result="loaded"}`` show the switch.

Windows stored under the old bundle carry its encoding's tag (streams/window.py). The new
bundle's item and category indices mean other things, so such a window is re-encoded on its
user's next event by :class:`WindowRemapper` -- each index mapped to the same id in the new
vocabularies (ids the new model does not know become "unknown") -- when the old encoding is
known: any bundle this worker has served, and any bundle next to the served one in the model
directory. A window from an unknown encoding, or one whose spec differs beyond its length
(query hashing, gap buckets), starts afresh.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
from dataclasses import dataclass, fields
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from streams.bundle import MANIFEST, Bundle, BundleError, load_bundle
from streams.encoding import FIRST_TOKEN, Encoder, EncodingSpec, Vocabulary
from streams.metrics import WorkerMetrics
from streams.online import OnlineAccuracy
from streams.pipeline import Pipeline
from streams.scorer import Scorer
from streams.settings import Settings
from streams.window import UserWindow, WindowFormatError, window_header

log = logging.getLogger("shopcast.hot_swap")

Identity = tuple[str, str, int]


def bundle_identity(path: Path) -> Identity | None:
    """Where ``path`` resolves to, its manifest's digest and its newest file time.

    Any change to the bundle an operator can make changes one of them. None when there is
    no readable manifest (yet).
    """
    try:
        real = Path(os.path.realpath(path))
        manifest = (real / MANIFEST).read_bytes()
        newest = max(entry.stat().st_mtime_ns for entry in real.iterdir())
    except (OSError, ValueError):
        return None
    return str(real), hashlib.sha256(manifest).hexdigest(), newest


@dataclass(frozen=True)
class Model:
    """Everything that depends on the bundle: verified bundle, scorer and encoder."""

    bundle: Bundle
    scorer: Scorer
    encoder: Encoder
    identity: Identity | None


def prepare(path: Path, settings: Settings) -> Model:
    """Load, verify and get ready to serve the bundle at ``path``; raises BundleError."""
    identity = bundle_identity(path)
    if identity is None:
        raise BundleError(f"{path}: no readable {MANIFEST}")
    # Load from the resolved directory: the link may be switched again while this runs.
    bundle = load_bundle(identity[0])
    scorer = Scorer(bundle, top_k=settings.top_k, threads=settings.inference_threads,
                    state_users=settings.state_users)
    encoder = Encoder(bundle.spec, bundle.items, bundle.categories)
    smoke_test(scorer, encoder)
    if settings.window_length is not None and settings.window_length > bundle.spec.max_len:
        raise BundleError(f"{bundle.path}: SHOPCAST_WINDOW_LENGTH={settings.window_length} "
                          f"exceeds the bundle's max_len {bundle.spec.max_len}")
    return Model(bundle, scorer, encoder, identity)


def smoke_test(scorer: Scorer, encoder: Encoder) -> None:
    """Score probe windows before serving; raise BundleError unless the outputs fit the bundle.

    The manifest's hashes prove the files are the ones exported together, not that the
    model fits the vocabularies shipped with it: a model trained for other vocabularies
    fails on their highest indices, or ranks items the vocabulary does not have.
    """
    bundle, spec = scorer.bundle, encoder.spec
    n_items, n_categories = len(encoder.items), len(encoder.categories)
    declared = bundle.manifest.get("model", {})
    for name, have in (("n_items", n_items), ("n_categories", n_categories)):
        if name in declared and declared[name] != have:
            raise BundleError(f"{bundle.path}: the model was trained for {declared[name]} "
                              f"{name[2:]} but the bundle's vocabulary has {have}")
    probe = np.zeros(spec.max_len, dtype=encoder.dtype)
    probe["item"] = np.linspace(FIRST_TOKEN, n_items - 1, spec.max_len).astype(np.int64)
    probe["category"] = np.linspace(FIRST_TOKEN, n_categories - 1, spec.max_len).astype(np.int64)
    probe["action"] = np.arange(spec.max_len) % len(spec.actions) + 1
    probe["gap"] = np.minimum(np.arange(spec.max_len) + 1, spec.gap_buckets - 1)
    probe["query"] = np.arange(spec.max_len * spec.query_slots).reshape(
        spec.max_len, spec.query_slots) % spec.query_buckets
    try:
        scores = scorer.score([probe, probe[-1:]])
    except Exception as exc:  # onnxruntime raises its own types
        raise BundleError(f"{bundle.path}: the model fails on this bundle's own vocabulary "
                          f"indices: {exc}") from None
    top = scores.top_items
    if top.size and (top.min() < FIRST_TOKEN or top.max() >= n_items):
        raise BundleError(f"{bundle.path}: the model ranks item indices {int(top.min())}.."
                          f"{int(top.max())}, outside the vocabulary's {FIRST_TOKEN}.."
                          f"{n_items - 1}")
    finite = all(np.isfinite(a).all() for a in (scores.next_action, scores.top_scores,
                                                 scores.purchase_probability,
                                                 scores.next_event_seconds))
    if not finite:
        raise BundleError(f"{bundle.path}: the model returns NaN or infinite scores")


# --- windows stored under another encoding ---------------------------------------------------

def _same_records(a: EncodingSpec, b: EncodingSpec) -> bool:
    """True when records of ``a`` mean the same under ``b`` apart from vocabulary indices."""
    return all(getattr(a, f.name) == getattr(b, f.name) for f in fields(EncodingSpec)
               if f.name != "max_len")


def index_map(old: Vocabulary, new: Vocabulary) -> np.ndarray:
    """``map[old_index] = new_index`` for the same id.

    Reserved indices stay; ids the new vocabulary lacks become UNKNOWN.
    """
    return np.array(list(range(FIRST_TOKEN)) + [new.index(token) for token in old.tokens],
                    dtype=np.int64)


class WindowRemapper:
    """Re-encodes windows stored under an earlier encoding for the one being served."""

    def __init__(self) -> None:
        self.encoders: dict[int, Encoder] = {}
        self._maps: dict[tuple[int, int], tuple[np.ndarray, np.ndarray]] = {}

    def remember(self, encoder: Encoder) -> None:
        """Make windows written with ``encoder`` readable after a swap."""
        self.encoders.setdefault(encoder.vocab_tag, encoder)

    def remember_siblings(self, bundle_dir: Path) -> None:
        """Remember the encodings of the other bundles next to ``bundle_dir``.

        After a restart a worker has only served its current bundle; windows from the one
        before are still readable if that bundle is still in the model directory.
        """
        parent = Path(os.path.realpath(bundle_dir)).parent
        for sibling in sorted(parent.iterdir()):
            if sibling.is_symlink() or not (sibling / MANIFEST).is_file():
                continue
            try:
                bundle = load_bundle(sibling)
            except BundleError:
                continue  # a broken old bundle: its windows start afresh
            self.remember(Encoder(bundle.spec, bundle.items, bundle.categories))

    def adopt(self, stored: bytes, target: Encoder, max_len: int) -> UserWindow | None:
        """``stored`` re-encoded for ``target``, or None when its encoding is unknown."""
        header = window_header(stored)
        if header is None:
            return None
        source = self.encoders.get(header.vocab_tag)
        if source is None or not _same_records(source.spec, target.spec):
            return None
        try:
            old = UserWindow.from_bytes(stored, source)
        except WindowFormatError:
            return None
        items, categories = self._index_maps(source, target)
        records = old.records[-max_len:].copy()
        # Indices beyond the old vocabulary cannot occur in its windows; clip defensively.
        records["item"] = items[np.minimum(records["item"], len(items) - 1)]
        records["category"] = categories[np.minimum(records["category"], len(categories) - 1)]
        return UserWindow(records.tobytes(), target.itemsize, old.last_ts_ms, old.updated_s,
                          old.partition, target.vocab_tag, target.dtype)

    def _index_maps(self, source: Encoder, target: Encoder) -> tuple[np.ndarray, np.ndarray]:
        key = (source.vocab_tag, target.vocab_tag)
        if key not in self._maps:
            self._maps[key] = (index_map(source.items, target.items),
                               index_map(source.categories, target.categories))
        return self._maps[key]


# --- watching the model directory ------------------------------------------------------------

class BundleWatcher:
    """Notices a new bundle at ``SHOPCAST_BUNDLE_PATH`` and prepares it for the next batch."""

    def __init__(self, settings: Settings, serving: Model, metrics: WorkerMetrics) -> None:
        self.settings = settings
        self.path = settings.bundle_path
        self.serving = serving
        self.metrics = metrics
        self.pending: Model | None = None
        self.refused: Identity | None = None
        self.remapper = WindowRemapper()
        self.remapper.remember(serving.encoder)
        try:
            self.remapper.remember_siblings(serving.bundle.path)
        except OSError as exc:
            log.warning("cannot read the other bundles next to %s (%s); windows of earlier "
                        "bundles will start afresh", serving.bundle.path, exc)

    async def check(self) -> None:
        """Load the bundle at the watched path if it changed (verification runs in a thread)."""
        identity = bundle_identity(self.path)
        known = (self.serving.identity, self.refused,
                 self.pending.identity if self.pending else None)
        if identity is None or identity in known:
            return
        loop = asyncio.get_running_loop()
        try:
            model = await loop.run_in_executor(None, partial(prepare, self.path, self.settings))
        except (BundleError, OSError, ValueError) as exc:
            self.refused = identity
            self.metrics.model_swaps.labels("refused").inc()
            log.error("refused the new bundle at %s: %s -- still serving model %s", self.path,
                      exc, self.serving.bundle.model_version)
            return
        self.remapper.remember(model.encoder)
        self.pending = model
        log.warning("bundle %s (model %s) verified; serving it from the next batch",
                    model.bundle.path, model.bundle.model_version)

    def take(self) -> Model | None:
        """The verified bundle waiting to be served, if any (handed over once)."""
        model, self.pending = self.pending, None
        if model is not None:
            self.serving = model
        return model


def serve(worker: Any, model: Model) -> None:
    """Make ``worker`` (streams.app.Worker) score with ``model`` from now on.

    Called between batches only: nothing is being admitted or scored with the old model.
    """
    old: Pipeline = worker.pipeline
    pipeline = Pipeline(model.encoder, window_length=worker.settings.window_length,
                        ttl_ms=old.ttl_ms, max_future_ms=old.max_future_ms,
                        pseudonym_secret=old.secret, rekey_topic=old.rekey_topic,
                        redelivery_margin=old.redelivery_margin)
    pipeline.foreign = partial(worker.models.remapper.adopt, target=model.encoder,
                               max_len=pipeline.capacity)
    worker.scorer = model.scorer
    worker.pipeline = pipeline
    # Online accuracy remembers predicted item indices of the old vocabulary: start over.
    worker.online = OnlineAccuracy(worker.metrics, horizon_ms=model.bundle.horizon_seconds * 1000,
                                   idle_ms=worker.settings.window_ttl_ms)
    worker.metrics.set_model(model.bundle.model_version, str(model.bundle.manifest["created_at"]),
                             model.bundle.horizon_seconds)
    worker.metrics.model_swaps.labels("loaded").inc()
    log.warning("now serving model %s from %s", model.bundle.model_version, model.bundle.path)


def swap_waiting(worker: Any) -> bool:
    """True when a verified new bundle waits for :func:`between_batches` to install it."""
    watcher: BundleWatcher | None = getattr(worker, "models", None)
    return watcher is not None and watcher.pending is not None


def between_batches(worker: Any) -> None:
    """Install a verified new bundle, if one is waiting (the hook at the start of a batch)."""
    if swap_waiting(worker):
        model = worker.models.take()
        if model is not None:
            serve(worker, model)


def watch(worker: Any, bundle: Bundle) -> BundleWatcher:
    """Set up the watcher for a worker serving ``bundle`` (its pipeline learns to re-encode)."""
    serving = Model(bundle, worker.scorer, worker.pipeline.encoder,
                    bundle_identity(worker.settings.bundle_path))
    watcher = BundleWatcher(worker.settings, serving, worker.metrics)
    worker.pipeline.foreign = partial(watcher.remapper.adopt, target=serving.encoder,
                                      max_len=worker.pipeline.capacity)
    return watcher
