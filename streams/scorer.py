"""The ONNX scorer: a batch of user windows in, Prediction v1 messages out.

One onnxruntime call serves windows of similar length: a batch is padded to
its longest window, and the model's cost grows with the padded length, so a
batch that mixes new shoppers (a few events) with regulars (a full window) is
split into groups of similar length (:data:`LENGTH_STEP`).

A bundle whose model has windowed attention also has a step graph: the
events of a user whose state is held (:mod:`streams.user_states`) run
through the network alone, a call for each group of users with similar
numbers of events in the batch (:mod:`streams.stepping`), and so do a new
user's (nothing came before them); a user's first event in the batch
without a held state and with earlier events in its window (after a restart
or a rebalance) is scored from its whole window first, and leaves the state
for the others.

The scorer is plain Python with no Faust import; the worker calls
:meth:`Scorer.predict` from a thread so inference never holds the event loop
(onnxruntime releases the GIL while it runs).
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
    MODEL_INPUTS,
    MODEL_OUTPUTS,
    STATE_OUTPUT,
    STEP_INPUTS,
    TOP_K_INITIALIZER,
    batch_inputs,
    record_dtype,
)
from streams.grouping import by_size
from streams.online import HIT_AT
from streams.stepping import Run, fresh_groups, plan_runs, step_inputs
from streams.user_states import UserStates

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
    stepped: int = 0  # rows scored by the step graph (from a held state or a first event)


class Scorer:
    """Runs a verified bundle's ONNX model on batches of windows."""

    def __init__(self, bundle: Bundle, *, top_k: int = 10, threads: int = 1,
                 state_users: int = 0) -> None:
        """Score with ``bundle``, ``top_k`` items per prediction.

        The graph returns at least the items online accuracy counts hits in
        (``streams.online.HIT_AT``), never more than the bundle's.
        """
        if top_k > bundle.top_k:
            raise BundleError(f"SHOPCAST_TOP_K={top_k} but the bundle's graph returns only "
                              f"{bundle.top_k} items; lower SHOPCAST_TOP_K or re-export with "
                              f"a larger top_k")
        self.bundle = bundle
        self.top_k = top_k
        self.session = _session(bundle, bundle.model_path, threads, MODEL_INPUTS)
        # A graph exported with an adjustable k returns only the items wanted: onnxruntime's
        # top-k costs about ten times more for the bundle's 100 items than for 10.
        returned = np.array([min(max(top_k, HIT_AT), bundle.top_k)], dtype=np.int64)
        self._k = {TOP_K_INITIALIZER: returned} if _adjustable(self.session) else {}
        self._record_size = record_dtype(bundle.spec).itemsize
        self.step: ort.InferenceSession | None = None
        self.states: UserStates | None = None
        self._min_len = 1
        window = bundle.attention_window
        returns_state = STATE_OUTPUT in (o.name for o in self.session.get_outputs())
        if state_users and bundle.step_path is not None and window and returns_state:
            self.step = _session(bundle, bundle.step_path, threads, STEP_INPUTS)
            layers = int(bundle.manifest["model"]["n_layers"])
            self.states = UserStates(state_users, depends_on=layers * (window - 1),
                                     record_size=self._record_size)
            # The state before a user's first event: nothing (what it holds is never read).
            heads = int(bundle.manifest["model"]["n_heads"])
            d_head = int(bundle.manifest["model"]["d_model"]) // heads
            self._empty = np.zeros((layers, 2, heads, window - 1, d_head), np.float32)
            self._min_len = window  # the step graph reads the window - 1 positions before
        # Item ids as an object array so a whole batch of indices maps in one take().
        self._item_ids = np.array([""] * 3 + bundle.items.tokens, dtype=object)

    def score(self, windows: Sequence[np.ndarray | bytes],
              users: Sequence[str] | None = None) -> Scores:
        """Run the model on a batch of windows (record arrays or packed record bytes).

        With ``users`` (whose window each is) and a bundle with a step graph,
        users whose state is held are scored from it, each user's windows in order.
        """
        if self.states is None or users is None:
            return _scores(self._by_length(windows, range(len(windows)), None))
        assert self.step is not None
        packed = [w if isinstance(w, bytes) else w.tobytes() for w in windows]
        outputs: list[np.ndarray] = []
        stepped = 0
        pending = list(range(len(packed)))
        # Usually one round: every event stepped (a call per group of runs with similar
        # numbers of events). Two where users without a held state have earlier events
        # (after a restart or a rebalance): their first events whole, then the rest
        # stepped. More only where a user's windows do not continue each other (each
        # round scores at least one event of every pending user).
        while pending:
            runs, misses = plan_runs(pending, users, packed, self.states, self._record_size,
                                     self._empty)
            if misses:
                *part, states = self._by_length(packed, misses, [*MODEL_OUTPUTS, STATE_OUTPUT])
                outputs = _place(outputs, len(packed), misses, part)
                for state, row in zip(states, misses, strict=True):
                    self.states.keep(users[row], packed[row], state)
                scored = set(misses)  # plan again: these users' later events can step now
            else:
                scored = set()
                for group in fresh_groups(runs):
                    rows, part = self._step(group)
                    outputs = _place(outputs, len(packed), rows, part)
                    scored.update(rows)
                stepped += len(scored)
            pending = [row for row in pending if row not in scored]
        return _scores(outputs, stepped)

    def _step(self, runs: Sequence[Run]) -> tuple[list[int], list[np.ndarray]]:
        """The step graph on runs: their rows in the batch and the predictions; keeps states."""
        assert self.step is not None and self.states is not None
        *part, states = self.step.run(None, {**step_inputs(runs, self.bundle.spec), **self._k})
        for state, run in zip(states, runs, strict=True):
            self.states.keep(run.user, run.last, state)
        return [row for run in runs for row in run.rows], part

    def forget(self, user: str) -> None:
        """Drop what is held of a user (erasure)."""
        if self.states is not None:
            self.states.forget(user)

    def _by_length(self, windows: Sequence[np.ndarray | bytes], rows: Sequence[int],
                   names: list[str] | None) -> list[np.ndarray]:
        """The whole-window graph on ``rows`` of a batch, one call per length group."""
        chosen = [windows[i] for i in rows]
        groups = _length_groups(self._lengths(chosen), self.bundle.spec.max_len)
        if len(groups) == 1:
            return self._run(chosen, names)
        outputs: list[np.ndarray] = []
        for group in groups:
            outputs = _place(outputs, len(chosen), group,
                             self._run([chosen[i] for i in group], names))
        return outputs

    def _lengths(self, windows: Sequence[np.ndarray | bytes]) -> np.ndarray:
        """Events in each window: packed bytes count records of the bundle's record size."""
        size = self._record_size
        return np.fromiter((len(w) // size if isinstance(w, bytes) else len(w) for w in windows),
                           dtype=np.int64, count=len(windows))

    def _run(self, windows: Sequence[np.ndarray | bytes], names: list[str] | None
             ) -> list[np.ndarray]:
        inputs = batch_inputs(windows, self.bundle.spec, min_len=self._min_len)
        return self.session.run(names or list(MODEL_OUTPUTS), {**inputs, **self._k})

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


def _scores(outputs: list[np.ndarray], stepped: int = 0) -> Scores:
    action, items, scores, purchase, seconds = outputs
    return Scores(action, items, scores, purchase, seconds, stepped)


def _adjustable(session: ort.InferenceSession) -> bool:
    """Whether the graph's k of top-k may be given (model_export.export.adjustable_top_k)."""
    return any(i.name == TOP_K_INITIALIZER for i in session.get_overridable_initializers())


def _session(bundle: Bundle, path: Path, threads: int, inputs: tuple[str, ...]
             ) -> ort.InferenceSession:
    """An onnxruntime session of one of the bundle's graphs, its interface checked."""
    options = ort.SessionOptions()
    # Errors only: onnxruntime warns on every load that ``top_k`` is an input that may be
    # overridden, which is the point of it.
    options.log_severity_level = 3
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    try:
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own exception types
        raise BundleError(f"{bundle.path}: onnxruntime cannot load {path.name}: {exc}") from None
    names_in = tuple(i.name for i in session.get_inputs())
    names_out = tuple(o.name for o in session.get_outputs())
    if names_in != inputs or names_out[:len(MODEL_OUTPUTS)] != MODEL_OUTPUTS \
            or names_out[len(MODEL_OUTPUTS):] not in ((), (STATE_OUTPUT,)):
        raise BundleError(f"{bundle.path}: {path.name} has inputs {names_in} and outputs "
                          f"{names_out}; expected {inputs} and {MODEL_OUTPUTS} (and "
                          f"{STATE_OUTPUT!r})")
    return session


def _place(outputs: list[np.ndarray], size: int, rows: Sequence[int] | np.ndarray,
           part: list[np.ndarray]) -> list[np.ndarray]:
    """Write a call's outputs into the batch's rows, allocating them on the first call."""
    if not outputs:
        outputs = [np.empty((size, *o.shape[1:]), o.dtype) for o in part]
    for whole, piece in zip(outputs, part, strict=True):
        whole[rows] = piece
    return outputs


def _length_groups(lengths: np.ndarray, max_len: int) -> list[np.ndarray]:
    """Row indices of a batch, grouped by window length (rounded up to LENGTH_STEP).

    Groups smaller than MIN_GROUP join the next longer group, so every call is
    worth its overhead; a small batch stays one group.
    """
    if len(lengths) < 2 * MIN_GROUP:
        return [np.arange(len(lengths))]
    steps = ((np.minimum(lengths, max_len) + LENGTH_STEP - 1) // LENGTH_STEP).tolist()
    groups = by_size(range(len(steps)), steps.__getitem__, lambda _: 1, MIN_GROUP)
    return [np.array(group, dtype=np.int64) for group in groups]
