"""The ONNX scorer: a batch of user windows in, Prediction v1 messages out.

One onnxruntime call serves windows of similar length: a batch is padded to
its longest window, and the model's cost grows with the padded length, so a
batch that mixes new shoppers (a few events) with regulars (a full window) is
split into groups of similar length (:data:`LENGTH_STEP`). The scorer is plain
Python with no Faust import; the worker calls :meth:`Scorer.predict` from a
thread so inference never holds the event loop (onnxruntime releases the GIL
while it runs).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import onnxruntime as ort

from streams.bundle import Bundle, BundleError
from streams.contracts import Event, encode_prediction
from streams.encoding import MODEL_INPUTS, MODEL_OUTPUTS, batch_inputs, record_dtype

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


class Scorer:
    """Runs a verified bundle's ONNX model on batches of windows."""

    def __init__(self, bundle: Bundle, *, top_k: int = 10, threads: int = 1) -> None:
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
        try:
            self.session = ort.InferenceSession(str(bundle.model_path), options,
                                                providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own exception types
            raise BundleError(f"{bundle.path}: onnxruntime cannot load model.onnx: {exc}") from None
        names_in = tuple(i.name for i in self.session.get_inputs())
        names_out = tuple(o.name for o in self.session.get_outputs())
        if names_in != MODEL_INPUTS or names_out != MODEL_OUTPUTS:
            raise BundleError(f"{bundle.path}: model.onnx has inputs {names_in} and outputs "
                              f"{names_out}; expected {MODEL_INPUTS} and {MODEL_OUTPUTS}")
        self._record_size = record_dtype(bundle.spec).itemsize
        # Item ids as an object array so a whole batch of indices maps in one take().
        self._item_ids = np.array([""] * 3 + bundle.items.tokens, dtype=object)

    def score(self, windows: Sequence[np.ndarray | bytes]) -> Scores:
        """Run the model on a batch of windows (record arrays or packed record bytes)."""
        groups = _length_groups(self._lengths(windows), self.bundle.spec.max_len)
        if len(groups) == 1:
            return Scores(*self._run(windows))
        outputs: list[np.ndarray] = []
        for rows in groups:
            part = self._run([windows[i] for i in rows])
            if not outputs:  # allocate once the output shapes and types are known
                outputs = [np.empty((len(windows), *o.shape[1:]), o.dtype) for o in part]
            for whole, piece in zip(outputs, part, strict=True):
                whole[rows] = piece
        return Scores(*outputs)

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
        scores = self.score(windows)
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
