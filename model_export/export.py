"""Checkpoint to bundle: ONNX export, parity check, optional int8, evaluation, bundle.

The graph is exported with the dynamo-based ``torch.onnx.export`` and
symbolic ``batch`` and ``seq`` dimensions. The TorchScript exporter can bake
the example's sequence length into reshapes, and a graph that only works for
one length would pass a single-shape test, so the parity check runs real
windows at several batch sizes and lengths and fails the export when onnxruntime
and PyTorch disagree by more than :data:`PARITY_TOLERANCE`.
"""

from __future__ import annotations

import contextlib
import io
import logging
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from model_export.bundle_writer import write_bundle
from model_export.checkpoint import Checkpoint
from model_export.data import EventLog, Prepared, prepare, read_events
from model_export.model import NextActionModel, Predictor, StepPredictor
from streams.bundle import load_bundle
from streams.encoding import (
    MODEL_INPUTS,
    MODEL_OUTPUTS,
    STATE_OUTPUT,
    STEP_INPUTS,
    TOP_K_INITIALIZER,
)

OPSET = 18
PARITY_TOLERANCE = 1e-4
DEFAULT_TOP_K = 100


class ExportError(RuntimeError):
    """The exported graph does not reproduce the PyTorch model."""


@dataclass
class ParityResult:
    """Largest differences between onnxruntime and PyTorch over every checked shape."""

    max_abs_diff: float
    shapes: list[tuple[int, int]]

    def to_dict(self) -> dict[str, Any]:
        """For the manifest."""
        return {"max_abs_diff": self.max_abs_diff, "shapes": [list(s) for s in self.shapes],
                "tolerance": PARITY_TOLERANCE}


def export_onnx(model: NextActionModel, path: Path, top_k: int = DEFAULT_TOP_K) -> Path:
    """Export the model's :class:`Predictor` to ONNX with dynamic batch and sequence axes."""
    from torch.export import Dim

    example = _example_inputs(model.cfg.query_slots, model.cfg.attention_window + 2)
    batch, seq = Dim("batch"), Dim("seq")
    dynamic = {name: {0: batch, 1: seq} for name in MODEL_INPUTS}
    outputs = list(MODEL_OUTPUTS) + ([STATE_OUTPUT] if model.cfg.attention_window else [])
    return _export(Predictor(model, top_k).eval(), example, dynamic, list(MODEL_INPUTS),
                   outputs, path)


def export_step_onnx(model: NextActionModel, path: Path, top_k: int = DEFAULT_TOP_K) -> Path:
    """Export the model's :class:`StepPredictor` (spans of at least attention_window events)."""
    from torch.export import Dim

    cfg = model.cfg
    n_past = cfg.attention_window - 1
    # Two users, the second with three fresh events, the first with one.
    span = _example_inputs(cfg.query_slots, n_past + 3)
    d_head = cfg.d_model // cfg.n_heads
    past = torch.zeros(2, cfg.n_layers, 2, cfg.n_heads, n_past + 3, d_head)
    fresh = torch.tensor([[0, 0, 5], [3, 4, 5]])
    take = torch.tensor([2, 3, 4, 5])
    batch, seq, n = Dim("batch"), Dim("seq", min=cfg.attention_window), Dim("fresh")
    dynamic: dict[str, Any] = {name: {0: batch, 1: seq} for name in MODEL_INPUTS}
    dynamic.update(past={0: batch, 4: n + n_past}, fresh={0: batch, 1: n},
                   take={0: Dim("events")})
    return _export(StepPredictor(model, top_k).eval(), (*span, past, fresh, take), dynamic,
                   list(STEP_INPUTS), [*MODEL_OUTPUTS, STATE_OUTPUT], path)


def _export(module: torch.nn.Module, example: tuple[torch.Tensor, ...], dynamic: dict[str, Any],
            inputs: list[str], outputs: list[str], path: Path) -> Path:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the exporter's chatter about axis names
        _quiet_exporter_logs()
        program = torch.onnx.export(
            module, example, dynamo=True, dynamic_shapes=dynamic, opset_version=OPSET,
            input_names=inputs, output_names=outputs, verbose=False)
    assert program is not None
    program.save(str(path))
    return path


def fuse_for_onnxruntime(source: Path, target: Path, model: NextActionModel) -> dict[str, int]:
    """Rewrite the graph with onnxruntime's fused transformer kernels; returns what was fused.

    The dynamo exporter writes GELU and its bias as five elementwise nodes that
    onnxruntime's session-level optimizer does not recognise; its transformer
    optimizer turns them into one BiasGelu kernel (about a tenth of the graph's
    cost). The parity check runs on the fused graph.
    """
    from onnxruntime.transformers.optimizer import optimize_model

    cfg = model.cfg
    # Its fusions that do not apply here warn and print (its symbolic shape inference does
    # not handle this graph, and the fusions that need it are not the ones that help).
    logging.disable(logging.WARNING)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            # opt_level 0: only the portable Python fusions, no hardware-specific rewrites.
            fused = optimize_model(str(source), model_type="bert", num_heads=cfg.n_heads,
                                   hidden_size=cfg.d_model, opt_level=0)
    finally:
        logging.disable(logging.NOTSET)
    fused.save_model_to_file(str(target))
    return {k: v for k, v in fused.get_fused_operator_statistics().items() if v}


def adjustable_top_k(path: Path) -> None:
    """Name the graph's k of top-k ``top_k``, so that serving can ask for fewer items.

    onnxruntime's TopK costs about ten times more for 100 items than for 10
    (a sixth of the step graph at k = 100), and the worker sends only
    SHOPCAST_TOP_K of them. The initializer ``top_k`` is also a graph input,
    which makes it one that a caller may override (its value in the file, the
    bundle's top_k, is the default); the outputs' item dimension becomes symbolic.
    """
    import onnx

    model = onnx.load(str(path))
    graph = model.graph
    (topk,) = [node for node in graph.node if node.op_type == "TopK"]
    (k,) = [init for init in graph.initializer if init.name == topk.input[1]]
    k.name = topk.input[1] = TOP_K_INITIALIZER
    graph.input.append(onnx.helper.make_tensor_value_info(TOP_K_INITIALIZER,
                                                          onnx.TensorProto.INT64, [1]))
    for output in graph.output:
        if output.name in ("top_items", "top_scores"):
            output.type.tensor_type.shape.dim[1].dim_param = TOP_K_INITIALIZER
    onnx.save(model, str(path))


def _quiet_exporter_logs() -> None:
    for name in ("torch.onnx", "torch.export", "torch._dynamo", "onnxscript"):
        logging.getLogger(name).setLevel(logging.ERROR)


def _example_inputs(query_slots: int, length: int) -> tuple[torch.Tensor, ...]:
    # Any plausible values: batch 2 and a length of at least 5, both different from 1 so
    # that the exporter cannot specialise them, with some left padding.
    length = max(length, 5)
    actions = torch.tensor([[0, 0, 1, 3, 4], [1, 2, 3, 3, 5]]).repeat(1, length)[:, -length:]
    real = (actions > 0).long()
    items = torch.tensor([[0, 0, 3, 4, 5], [3, 1, 4, 4, 6]]).repeat(1, length)[:, -length:] * real
    categories = torch.tensor([[0, 0, 3, 3, 4], [3, 1, 3, 3, 4]]).repeat(1, length)[:, -length:]
    gaps = torch.tensor([[0, 0, 1, 3, 4], [1, 5, 3, 2, 6]]).repeat(1, length)[:, -length:]
    queries = torch.zeros(2, length, query_slots, dtype=torch.long)
    queries[1, 1] = torch.arange(1, query_slots + 1)
    return items, categories * real, actions, gaps * real, queries


def parity_check(model: NextActionModel, onnx_path: Path, samples: dict[str, torch.Tensor],
                 top_k: int = DEFAULT_TOP_K, step_path: Path | None = None) -> ParityResult:
    """Compare onnxruntime with PyTorch on real windows of several batch sizes and lengths.

    With ``step_path``, the step graph is checked too: fed the state the
    whole-window graph returned for each window without its newest event, it
    must predict what PyTorch predicts for the whole window. Raises
    :class:`ExportError` when any output differs by more than
    :data:`PARITY_TOLERANCE`. Items are compared by probability, not by
    index, so two items with equal scores in a different order are no failure.
    """
    import onnxruntime as ort

    predictor = Predictor(model, top_k).eval()
    options = ort.SessionOptions()
    options.log_severity_level = 3  # not the warning that top_k may be overridden
    session = ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
    step = (ort.InferenceSession(str(step_path), options, providers=["CPUExecutionProvider"])
            if step_path is not None else None)
    n, length = samples["actions"].shape
    shapes = sorted({(1, 1), (1, length), (min(3, n), min(7, length)),
                     (n, max(1, length // 2)), (n, length), (min(5, n), length)})
    worst = 0.0
    for b, t in shapes:
        inputs = {k: v[:b, -t:].contiguous() for k, v in samples.items()}
        with torch.no_grad():
            ref = [o.numpy() for o in predictor(*(inputs[k] for k in MODEL_INPUTS))]
            # The full computation (every position through every block), against the
            # Predictor's last-position-only path inside the graph.
            encoded = model(*(inputs[k] for k in MODEL_INPUTS))
            full = model.item_probs(encoded, inputs["items"]).numpy()
            full = np.pad(full, ((0, 0), (3, 0)))  # columns back to vocabulary indices
        got = session.run(list(MODEL_OUTPUTS), {k: v.numpy() for k, v in inputs.items()})
        worst = max(worst, _compare(got, ref, full, f"batch {b}, length {t}"))
        if step is not None and t > 1:
            worst = max(worst, _step_parity(model, session, step, inputs, top_k))
    return ParityResult(worst, shapes)


def _step_parity(model: NextActionModel, session: Any, step: Any,
                 inputs: dict[str, torch.Tensor], top_k: int) -> float:
    """The step graph against PyTorch on each window's last (up to) three events.

    The step graph gets the state the whole-window graph returned for the rest
    of the window; PyTorch gets each event's own window.
    """
    t = inputs["actions"].shape[1]
    k = min(3, t - 1)
    real = inputs["actions"][:, t - k] > 0  # rows whose fresh events are all real events
    if not real.any():
        return 0.0
    inputs = {name: v[real] for name, v in inputs.items()}
    b = int(real.sum())
    n_past = model.cfg.attention_window - 1
    earlier = {name: _left_pad(v[:, :t - k].numpy(), n_past + 1) for name, v in inputs.items()}
    state = session.run([STATE_OUTPUT], earlier)[0]  # (b, L, 2, H, P, D)
    past = np.zeros((*state.shape[:4], n_past + k, state.shape[5]), np.float32)
    past[:, :, :, :, :n_past] = state  # every row has k fresh events
    feeds = {name: _left_pad(v.numpy(), n_past + k) for name, v in inputs.items()}
    feeds.update(past=past, fresh=np.tile(np.arange(t - k + 1, t + 1), (b, 1)),
                 take=np.arange(b * k))
    got = step.run(list(MODEL_OUTPUTS), feeds)
    predictor = Predictor(model, top_k).eval()
    with torch.no_grad():
        prefixes = [{name: v[:, :t - k + i + 1] for name, v in inputs.items()}
                    for i in range(k)]  # each fresh event's own window
        refs = [predictor(*(w[n] for n in MODEL_INPUTS)) for w in prefixes]
        fulls = [np.pad(model.item_probs(model(*(w[n] for n in MODEL_INPUTS)),
                                         w["items"]).numpy(), ((0, 0), (3, 0)))
                 for w in prefixes]
    # Outputs come row by row, each row's fresh events in order.
    ref = [torch.stack([r[o] for r in refs], dim=1).flatten(0, 1).numpy() for o in range(5)]
    full = np.stack(fulls, axis=1).reshape(b * k, -1)
    return _compare(got, ref, full, f"the step graph, batch {b}, length {t}, {k} fresh events")


def _compare(got: list[np.ndarray], ref: list[np.ndarray], full: np.ndarray, where: str
             ) -> float:
    """The largest difference between onnxruntime's outputs and PyTorch's, or ExportError."""
    action, items, scores, purchase, seconds = got
    if items.shape != ref[1].shape or (items < 3).any():
        raise ExportError(f"ONNX top_items has shape {items.shape} or reserved indices at "
                          f"{where}")
    diffs = {
        "next_action": np.abs(action - ref[0]).max(),
        "top_scores": np.abs(scores - ref[2]).max(),
        "top_items (their PyTorch probability)":
            np.abs(np.take_along_axis(full, items, axis=1) - scores).max(),
        "purchase_probability": np.abs(purchase - ref[3]).max(),
        # Seconds span 0..1e6: compare on the log scale the head predicts in.
        "next_event_seconds (log1p)": np.abs(np.log1p(seconds) - np.log1p(ref[4])).max(),
    }
    for name, diff in diffs.items():
        if not np.isfinite(diff) or diff > PARITY_TOLERANCE:
            raise ExportError(f"ONNX and PyTorch disagree on {name} by {diff:.3g} (limit "
                              f"{PARITY_TOLERANCE:g}) at {where}: the export is broken; "
                              "the bundle was not written")
    return float(max(diffs.values()))


def _left_pad(x: np.ndarray, length: int) -> np.ndarray:
    """(B, T, ...) -> (B, max(T, length), ...) with zeros (padding) on the left."""
    missing = length - x.shape[1]
    if missing <= 0:
        return x
    return np.concatenate([np.zeros((x.shape[0], missing, *x.shape[2:]), x.dtype), x], axis=1)


def quantize_int8(source: Path, target: Path) -> Path:
    """Dynamic int8 quantization of the weights (activations stay float)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(str(source), str(target), weight_type=QuantType.QInt8)
    return target


def export_bundle(checkpoint: Checkpoint, out: Path | str, *, top_k: int = DEFAULT_TOP_K,
                  int8: bool = False, log: EventLog | None = None,
                  oracle: Path | str | None = None, threads: int = 1,
                  plot: bool = True, data: Prepared | None = None) -> Path:
    """Export a checkpoint to a verified bundle, evaluated on ``log``'s test split if given.

    Without ``log``, the log the checkpoint was trained on is used when it is
    still at its recorded path with the same sha256; otherwise the bundle
    carries the validation metrics only and says so.
    """
    from model_export.evaluate import evaluate, plot_by_history_length

    if log is None:
        log = _training_log(checkpoint)
    if int8 and log is None:
        raise ValueError("--int8 records the metric change, so it needs the event log: pass "
                         "--events FILE (the log the model was trained on)")
    if log is not None and data is None:
        data = prepare(log, checkpoint.spec, ttl_seconds=checkpoint.ttl_seconds,
                       horizon_seconds=checkpoint.horizon_seconds,
                       vocabularies=(checkpoint.items, checkpoint.categories))
    model = checkpoint.model()
    top_k = min(top_k, checkpoint.config.n_items - 3)
    with tempfile.TemporaryDirectory(prefix="shopcast-export-") as tmp:
        work = Path(tmp)
        exported = export_onnx(model, work / "exported.onnx", top_k)
        onnx_path = work / "fp32.onnx"
        fusions = fuse_for_onnxruntime(exported, onnx_path, model)
        adjustable_top_k(onnx_path)
        step_path = None
        if model.cfg.attention_window:
            step_path = work / "step.onnx"
            fuse_for_onnxruntime(export_step_onnx(model, work / "step_exported.onnx", top_k),
                                 step_path, model)
            adjustable_top_k(step_path)
        parity = parity_check(model, onnx_path, checkpoint.samples, top_k, step_path)
        common = _bundle_fields(checkpoint, top_k)
        common["model"]["parity"] = parity.to_dict()
        common["model"]["exporter"] = {"name": "torch.onnx.export(dynamo=True)", "opset": OPSET,
                                       "torch": torch.__version__,
                                       "onnxruntime_fusions": fusions}
        validation = checkpoint.training.get("validation", {})
        report: dict[str, Any] = {"validation": validation,
                                  "training": _training_summary(checkpoint)}
        metrics: dict[str, Any] = {"validation": validation}
        extra: dict[str, Path] = {}
        if log is not None:
            staged = write_bundle(work / "fp32", onnx_file=onnx_path, metrics={}, report={},
                                  quantized=False, step_file=step_path, **common)
            report.update(evaluate(load_bundle(staged), log, oracle=oracle, threads=threads,
                                   data=data))
            metrics = {"model": report["model"], "baselines": report["baselines"],
                       "n_test": report["n_test"], "validation": validation}
        if int8:
            assert log is not None
            onnx_path = quantize_int8(onnx_path, work / "int8.onnx")
            if step_path is not None:
                step_path = quantize_int8(step_path, work / "step_int8.onnx")
            staged = write_bundle(work / "int8", onnx_file=onnx_path, metrics={}, report={},
                                  quantized=True, step_file=step_path, **common)
            fp32 = report["model"]
            quantized = evaluate(load_bundle(staged), log, oracle=oracle, threads=threads,
                                 data=data)
            change = {k: None if fp32.get(k) is None or v is None else round(v - fp32[k], 6)
                      for k, v in quantized["model"].items() if k not in ("n", "n_with_item")}
            report.update(quantized)
            report["model_fp32"] = fp32
            report["int8_change"] = change
            metrics.update(model=quantized["model"], model_fp32=fp32, int8_change=change)
        if log is not None and plot:
            extra["evaluation.png"] = plot_by_history_length(report, work / "evaluation.png")
        if log is None:
            report["note"] = ("not evaluated on a test split: the training log was not "
                              "available; run 'shopcast evaluate BUNDLE EVENTS'")
        return write_bundle(out, onnx_file=onnx_path, metrics=metrics, report=report,
                            quantized=int8, step_file=step_path, extra_files=extra, **common)


def _bundle_fields(ckpt: Checkpoint, top_k: int) -> dict[str, Any]:
    training = ckpt.training
    return {
        "spec": ckpt.spec, "items": ckpt.items, "categories": ckpt.categories, "top_k": top_k,
        "horizon_seconds": ckpt.horizon_seconds, "ttl_seconds": ckpt.ttl_seconds,
        "model": {"architecture": "causal self-attention (pre-LN, rotary)",
                  **ckpt.config.to_dict()},
        # The file's name only: where it sat on the training machine is nobody's business.
        "training_data": {"sha256": training.get("sha256"), "events": training.get("events"),
                          "users": training.get("users"),
                          "file": Path(training["path"]).name if training.get("path") else None,
                          # epsilon, delta and how they were reached, for a DP-SGD model
                          **{k: training[k] for k in ("differential_privacy",) if k in training}},
    }


def _training_summary(ckpt: Checkpoint) -> dict[str, Any]:
    keep = ("epochs_run", "best_epoch", "seconds", "seed", "options", "train_sequences",
            "differential_privacy")
    return {k: ckpt.training[k] for k in keep if k in ckpt.training}


def _training_log(ckpt: Checkpoint) -> EventLog | None:
    path = ckpt.training.get("path")
    if not path or not Path(path).is_file():
        return None
    log = read_events(path)
    if log.sha256 != ckpt.training.get("sha256"):
        logging.getLogger(__name__).warning(
            "%s changed since training (sha256 differs); not evaluating on it", path)
        return None
    return log
