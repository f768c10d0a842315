"""The ONNX scorer: a batch of user windows in, Prediction v1 messages out.

One onnxruntime call serves windows of similar length: a batch is padded to
its longest window, and the model's cost grows with the padded length, so a
batch that mixes new shoppers (a few events) with regulars (a full window) is
split into groups of similar length (:data:`LENGTH_STEP`). Given the users,
and a bundle with the incremental graph, a window that is the user's last
scored window plus one event is scored by that graph from the cached states
of the earlier events (:mod:`streams.event_states`). The scorer is plain
Python with no Faust import; the worker calls :meth:`Scorer.predict` from a
thread so inference never holds the event loop (onnxruntime releases the GIL
while it runs).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort

from streams.bundle import Bundle, BundleError
from streams.contracts import Event, encode_prediction
from streams.encoding import (
    EVENT_STATES,
    MODEL_INPUTS,
    MODEL_OUTPUTS,
    NEWEST_STATES,
    batch_inputs,
    record_dtype,
)
from streams.event_states import EventStateCache
from streams.settings import Settings

# Windows are grouped by their length rounded up to a multiple of this many events.
# Each group is one onnxruntime call (tens of microseconds of overhead), so a small
# batch is scored in one call: splitting it would cost more than the padding.
LENGTH_STEP = 10
MIN_GROUP = 16


@dataclass(frozen=True)
class Scores:
    """Raw model outputs for a batch, one row per window."""

    next_action: np.ndarray  # (B, 5) float32
    top_items: np.ndarray  # (B, K) int64 vocabulary indices
    top_scores: np.ndarray  # (B, K) float32
    purchase_probability: np.ndarray  # (B,) float32
    next_event_seconds: np.ndarray  # (B,) float32
    reused: int = 0  # windows scored from their earlier events' cached states

    @classmethod
    def of(cls, outputs: list[np.ndarray], reused: int = 0) -> Scores:
        """Scores from the graph's outputs, in :data:`MODEL_OUTPUTS` order (extra ones ignored)."""
        action, items, scores, purchase, seconds = outputs[:len(MODEL_OUTPUTS)]
        return cls(action, items, scores, purchase, seconds, reused)


class Scorer:
    """Runs a verified bundle's ONNX model on batches of windows.

    ``state_cache_users`` > 0 keeps that many users' event states for the
    incremental graph (when the bundle has one); ``window_length`` is the
    longest window the worker scores (the bundle's max_len by default).
    """

    def __init__(self, bundle: Bundle, *, top_k: int = 10, threads: int = 1,
                 state_cache_users: int = 0, window_length: int | None = None) -> None:
        if top_k > bundle.top_k:
            raise BundleError(f"SHOPCAST_TOP_K={top_k} but the bundle's graph returns only "
                              f"{bundle.top_k} items; lower SHOPCAST_TOP_K or re-export with "
                              f"a larger top_k")
        self.bundle = bundle
        self.top_k = top_k
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        newest_path = bundle.newest_model_path
        self.session = _session(bundle, bundle.model_path, options, MODEL_INPUTS,
                                MODEL_OUTPUTS + ((EVENT_STATES,) if newest_path else ()))
        self.newest: ort.InferenceSession | None = None
        self.states: EventStateCache | None = None
        if newest_path is not None and state_cache_users > 0:
            self.newest = _session(bundle, newest_path, options, MODEL_INPUTS + (EVENT_STATES,),
                                   MODEL_OUTPUTS + (NEWEST_STATES,))
            self.states = EventStateCache(state_cache_users,
                                          window_length or bundle.spec.max_len)
        self._record_size = record_dtype(bundle.spec).itemsize
        # Item ids as an object array so a whole batch of indices maps in one take().
        self._item_ids = np.array([""] * 3 + bundle.items.tokens, dtype=object)

    def score(self, windows: Sequence[np.ndarray | bytes],
              users: Sequence[str] | None = None) -> Scores:
        """Run the model on a batch of windows (record arrays or packed record bytes).

        With ``users`` (whose window each is) the state cache is used and updated.
        """
        if self.states is None or users is None:
            groups = _length_groups(self._lengths(windows), self.bundle.spec.max_len)
            if len(groups) == 1:
                return Scores.of(self._run(windows))
            outputs = _Outputs(len(windows))
            for rows in groups:
                outputs.place(rows, self._run([windows[i] for i in rows]))
            return Scores.of(outputs.arrays)
        return self._score_with_states(windows, users, self.states)

    def _score_with_states(self, windows: Sequence[np.ndarray | bytes], users: Sequence[str],
                           cache: EventStateCache) -> Scores:
        size, max_len = self._record_size, self.bundle.spec.max_len
        bodies = [w if isinstance(w, bytes) else w.tobytes() for w in windows]
        earlier = [cache.earlier(user, body, size) 
                   for user, body in zip(users, bodies, strict=True)]
        lengths = self._lengths(bodies)
        hit = np.fromiter((e is not None for e in earlier), dtype=bool, count=len(bodies))
        outputs = _Outputs(len(bodies))
        kept: dict[int, np.ndarray] = {}
        misses = np.flatnonzero(~hit)
        for rows in _length_groups(lengths[misses], max_len) if len(misses) else []:
            rows = misses[rows]
            part = self.session.run([*MODEL_OUTPUTS, EVENT_STATES],
                                    batch_inputs([bodies[i] for i in rows], self.bundle.spec))
            outputs.place(rows, part)
            states, t = part[-1], part[-1].shape[1]
            for j, row in enumerate(rows):  # copies: the batch's array is not kept alive
                kept[row] = states[j, t - lengths[row]:].copy()
        hits = np.flatnonzero(hit)
        assert self.newest is not None
        for rows in _length_groups(lengths[hits], max_len) if len(hits) else []:
            rows = hits[rows]
            inputs = batch_inputs([bodies[i] for i in rows], self.bundle.spec)
            t = inputs["actions"].shape[1]
            first = earlier[rows[0]]
            assert first is not None
            states = np.zeros((len(rows), t, *first.shape[1:]), dtype=np.float32)
            for j, row in enumerate(rows):  # left-padded like the inputs; the newest row unused
                states[j, t - lengths[row]:t - 1] = earlier[row]
            part = self.newest.run([*MODEL_OUTPUTS, NEWEST_STATES],
                                   {**inputs, EVENT_STATES: states})
            outputs.place(rows, part)
            for j, row in enumerate(rows):
                kept[row] = np.concatenate([earlier[row], part[-1][j]])  # type: ignore[list-item]
        for row in sorted(kept):  # in batch order: a user's later event has the longer window
            cache.keep(users[row], bodies[row], kept[row])
        return Scores.of(outputs.arrays, reused=len(hits))

    def _lengths(self, windows: Sequence[np.ndarray | bytes]) -> np.ndarray:
        """Events in each window: packed bytes count records of the bundle's record size."""
        size = self._record_size
        return np.fromiter((len(w) // size if isinstance(w, bytes) else len(w) for w in windows),
                           dtype=np.int64, count=len(windows))

    def _run(self, windows: Sequence[np.ndarray | bytes]) -> list[np.ndarray]:
        return self.session.run(list(MODEL_OUTPUTS), batch_inputs(windows, self.bundle.spec))

    def predict(self, events: Sequence[Event], windows: Sequence[np.ndarray | bytes], *,
                scored_at: int) -> tuple[list[bytes], Scores]:
        """Prediction v1 JSON for each event, given the window that ends with it.

        Also returns the raw scores, for online accuracy.
        """
        scores = self.score(windows, [event.user_id for event in events])
        k = self.top_k
        item_ids = self._item_ids.take(scores.top_items[:, :k])
        item_scores = scores.top_scores[:, :k].tolist()
        actions = scores.next_action.tolist()
        purchase = scores.purchase_probability.tolist()
        wait = scores.next_event_seconds.tolist()
        version = self.bundle.model_version
        return [
            encode_prediction(event, scored_at=scored_at, model_version=version,
                              next_action=actions[row], item_ids=item_ids[row],
                              item_scores=item_scores[row],
                              purchase_probability=purchase[row],
                              next_event_seconds=wait[row])
            for row, event in enumerate(events)
        ], scores


def scorer_for(bundle: Bundle, settings: Settings) -> Scorer:
    """The worker's scorer for a bundle, as the settings configure it."""
    return Scorer(bundle, top_k=settings.top_k, threads=settings.inference_threads,
                  state_cache_users=settings.state_cache_users,
                  window_length=settings.window_length)


class _Outputs:
    """The model's five outputs for a whole batch, filled group by group."""

    def __init__(self, rows: int) -> None:
        self.rows = rows
        self.arrays: list[np.ndarray] = []

    def place(self, rows: np.ndarray, part: list[np.ndarray]) -> None:
        """Put one call's outputs (any extra ones after the five ignored) at ``rows``."""
        if not self.arrays:  # allocate once the output shapes and types are known
            self.arrays = [np.empty((self.rows, *o.shape[1:]), o.dtype)
                           for o in part[:len(MODEL_OUTPUTS)]]
        for whole, piece in zip(self.arrays, part, strict=False):
            whole[rows] = piece


def _session(bundle: Bundle, path: Path, options: ort.SessionOptions,
             inputs: tuple[str, ...], outputs: tuple[str, ...]) -> ort.InferenceSession:
    """An onnxruntime session for one of the bundle's graphs, its interface checked."""
    try:
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own exception types
        raise BundleError(f"{bundle.path}: onnxruntime cannot load {path.name}: {exc}") from None
    names_in = tuple(i.name for i in session.get_inputs())
    names_out = tuple(o.name for o in session.get_outputs())
    if names_in != inputs or names_out != outputs:
        raise BundleError(f"{bundle.path}: {path.name} has inputs {names_in} and outputs "
                          f"{names_out}; expected {inputs} and {outputs}")
    return session


def _length_groups(lengths: np.ndarray, max_len: int) -> list[np.ndarray]:
    """Row indices of a batch, grouped by window length (rounded up to LENGTH_STEP).

    Groups smaller than MIN_GROUP join the next longer group, so every call is
    worth its overhead; a small batch stays one group.
    """
    if len(lengths) < 2 * MIN_GROUP:
        return [np.arange(len(lengths))]
    steps = (np.minimum(lengths, max_len) + LENGTH_STEP - 1) // LENGTH_STEP
    groups: list[np.ndarray] = []
    pending = np.empty(0, dtype=np.int64)
    for step in np.unique(steps):
        pending = np.concatenate([pending, np.flatnonzero(steps == step)])
        if len(pending) >= MIN_GROUP:
            groups.append(pending)
            pending = np.empty(0, dtype=np.int64)
    if len(pending):  # the longest windows, too few for a call of their own
        if groups:
            groups[-1] = np.concatenate([groups[-1], pending])
        else:
            groups.append(pending)
    return groups
