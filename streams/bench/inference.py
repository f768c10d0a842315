"""``shopcast bench inference``: what one prediction costs in the model, in one run.

Per-event time of the bundle's ONNX model at batch sizes 1, 16, 64 and 256 on
full windows of simulated shoppers: onnxruntime fp32, onnxruntime int8
(dynamic quantization of the same graph), PyTorch eager when torch and a
checkpoint of the same model are available, and the bundle's step graph (when
it has one) scoring each window's newest event from the state of the rest,
as the worker does for a user whose state it holds. One inference thread
each, as the worker runs it; every graph returns the bundle's top_k items.
"""

from __future__ import annotations

import itertools
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from streams.bundle import Bundle, load_bundle
from streams.encoding import MODEL_OUTPUTS, STATE_OUTPUT, Encoder, batch_inputs
from streams.stepping import Run, step_inputs
from streams.traffic import simulated_traffic
from streams.window import UserWindow

BATCH_SIZES = (1, 16, 64, 256)


def full_windows(bundle: Bundle, n: int) -> list[np.ndarray]:
    """``n`` windows of simulated shoppers, as long as the bundle allows."""
    import orjson

    from streams.contracts import event_from_dict

    encoder = Encoder(bundle.spec, bundle.items, bundle.categories)
    windows: dict[str, UserWindow] = {}
    done: list[np.ndarray] = []
    for record in itertools.islice(simulated_traffic(retime=False), 400_000):
        event = event_from_dict(orjson.loads(record.value), now_ms=2**62)
        window = windows.get(event.user_id) or UserWindow.empty(encoder)
        window = window.append(event, encoder, now_ms=0, ttl_ms=2**62)
        windows[event.user_id] = window
        if len(window) == bundle.spec.max_len:
            done.append(window.records.copy())
            del windows[event.user_id]
            if len(done) >= n:
                break
    return done


def _session(path: Path) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.log_severity_level = 3  # not the warning that top_k may be overridden
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def per_event_us(run: Callable[[], Any], batch: int, seconds: float) -> float:
    """Median per-event microseconds of ``run`` over repeated calls for about ``seconds``."""
    run()  # warm up
    times: list[float] = []
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline or len(times) < 3:
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return float(np.median(times)) / batch * 1e6


def run_inference_bench(bundle_path: Path, checkpoint: Path | None, *, seconds: float = 2.0,
                        say: Callable[[str], None] = print) -> dict[str, Any]:
    """Measure every variant at every batch size; returns the figures."""
    bundle = load_bundle(bundle_path)
    say(f"bundle {bundle.model_version}: {len(bundle.items) - 3} items, max_len "
        f"{bundle.spec.max_len}")
    windows = full_windows(bundle, max(BATCH_SIZES))
    inputs = {b: batch_inputs(windows[:b], bundle.spec) for b in BATCH_SIZES}
    variants: dict[str, Callable[[int], Callable[[], Any]]] = {}
    fp32 = _session(bundle.model_path)
    variants["onnxruntime fp32"] = lambda b: lambda: fp32.run(list(MODEL_OUTPUTS), inputs[b])
    int8 = _session(_quantized(bundle))
    variants["onnxruntime int8"] = lambda b: lambda: int8.run(list(MODEL_OUTPUTS), inputs[b])
    if bundle.step_path is not None:
        step = _session(bundle.step_path)
        steps = {b: _step_inputs(bundle, fp32, windows[:b]) for b in BATCH_SIZES}
        variants["onnxruntime step"] = lambda b: lambda: step.run(list(MODEL_OUTPUTS), steps[b])
    eager = _torch_eager(bundle, checkpoint)
    if eager is not None:
        variants["pytorch eager"] = lambda b: lambda: eager(inputs[b])
    else:
        say("pytorch eager: skipped (needs torch and a checkpoint: --checkpoint)")
    results: dict[str, dict[str, float]] = {}
    for name, make in variants.items():
        results[name] = {}
        for b in BATCH_SIZES:
            us = per_event_us(make(b), b, seconds)
            results[name][str(b)] = round(us, 2)
            say(f"{name:18s} batch {b:4d}: {us:9.1f} µs/event ({1e6 / us:,.0f} events/s)")
    return {"bundle": bundle.model_version, "window_length": bundle.spec.max_len,
            "items": len(bundle.items) - 3, "us_per_event": results}


def _step_inputs(bundle: Bundle, whole: ort.InferenceSession, windows: list[np.ndarray]
                 ) -> dict[str, np.ndarray]:
    """Step-graph inputs for each window's newest event, the state of the rest computed."""
    min_len = bundle.attention_window
    state = whole.run([STATE_OUTPUT], batch_inputs([w[:-1] for w in windows], bundle.spec,
                                                   min_len=min_len))[0]
    runs = [Run(str(i), state[i], w.tobytes(), [i], [len(w)]) for i, w in enumerate(windows)]
    return step_inputs(runs, bundle.spec)


def _quantized(bundle: Bundle) -> Path:
    """The bundle's model, dynamically quantized to int8 (in a temporary file)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    out = Path(tempfile.mkdtemp(prefix="shopcast-int8-")) / "model.int8.onnx"
    quantize_dynamic(str(bundle.model_path), str(out), weight_type=QuantType.QInt8)
    return out


def _torch_eager(bundle: Bundle, checkpoint: Path | None) -> Callable[[dict[str, np.ndarray]],
                                                                        Any] | None:
    """A callable running the same model in PyTorch, or None when that is not possible."""
    path = checkpoint or bundle.path / "checkpoint.pt"
    if not path.is_file():
        return None
    try:  # torch stays out of streams/: the eager model lives with the training code
        from model_export.eager import eager_predictor
    except ImportError:
        return None
    return eager_predictor(path, bundle.top_k)
