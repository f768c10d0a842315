"""The ONNX scorer: a batch of user windows in, Prediction v1 messages out.

One onnxruntime call serves a whole micro-batch. The scorer is plain Python
with no Faust import; the worker calls :meth:`Scorer.predict` from a thread
so inference never holds the event loop (onnxruntime releases the GIL while
it runs).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import onnxruntime as ort

from streams.bundle import Bundle, BundleError
from streams.contracts import Event, encode_prediction
from streams.encoding import MODEL_INPUTS, MODEL_OUTPUTS, batch_inputs


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
        # Item ids as an object array so a whole batch of indices maps in one take().
        self._item_ids = np.array([""] * 3 + bundle.items.tokens, dtype=object)

    def score(self, windows: Sequence[np.ndarray | bytes]) -> Scores:
        """Run the model on a batch of windows (record arrays or packed record bytes)."""
        inputs = batch_inputs(windows, self.bundle.spec)
        outputs = self.session.run(list(MODEL_OUTPUTS), inputs)
        return Scores(*outputs)

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
