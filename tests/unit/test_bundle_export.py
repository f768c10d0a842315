"""Export: the tiny bundle is a valid bundle v1 and onnxruntime runs it at any shape."""

import numpy as np
import onnxruntime as ort
import orjson

from streams.bundle import load_bundle
from streams.encoding import MODEL_INPUTS, MODEL_OUTPUTS, STATE_OUTPUT


def test_tiny_bundle_loads_and_lists_every_file(tiny_bundle):
    bundle = load_bundle(tiny_bundle)
    manifest = bundle.manifest
    assert set(manifest["files"]) >= {"model.onnx", "items.json", "categories.json",
                                      "evaluation.json"}
    assert manifest["top_k"] == 20 and manifest["purchase_horizon_seconds"] == 86400
    assert manifest["quantized"] is False
    assert manifest["metrics"]["model"]["ndcg@10"] is not None
    assert set(manifest["metrics"]["baselines"]) == {"popular", "markov"}
    assert manifest["model"]["parity"]["max_abs_diff"] <= 1e-4
    report = orjson.loads((tiny_bundle / "evaluation.json").read_bytes())
    assert report["n_test"] == manifest["metrics"]["n_test"] > 0


def test_onnx_graph_has_symbolic_batch_and_sequence(tiny_bundle):
    session = ort.InferenceSession(str(tiny_bundle / "model.onnx"))
    assert tuple(i.name for i in session.get_inputs()) == MODEL_INPUTS
    assert tuple(o.name for o in session.get_outputs()) == (*MODEL_OUTPUTS, STATE_OUTPUT)
    for inp in session.get_inputs():
        assert isinstance(inp.shape[0], str) and isinstance(inp.shape[1], str)
    for batch, seq in [(1, 1), (2, 9), (5, 33)]:
        feeds = {n: np.ones((batch, seq), np.int64) for n in MODEL_INPUTS[:4]}
        feeds["queries"] = np.zeros((batch, seq, 4), np.int64)
        action, items, scores, purchase, seconds = session.run(list(MODEL_OUTPUTS), feeds)
        assert action.shape == (batch, 5) and items.shape == (batch, 20)
        assert (items >= 3).all() and np.all(np.diff(scores, axis=1) <= 0)
        assert purchase.shape == seconds.shape == (batch,)


def test_the_graph_uses_onnxruntime_s_fused_gelu_and_still_matches_pytorch(tiny_bundle):
    # Fused after export (a tenth of the graph's cost); the parity check ran on the fused graph.
    import onnx

    manifest = load_bundle(tiny_bundle).manifest["model"]
    graph = onnx.load(str(tiny_bundle / "model.onnx")).graph
    fused = sum(node.op_type == "BiasGelu" for node in graph.node)
    assert fused == manifest["n_layers"] == manifest["exporter"]["onnxruntime_fusions"]["BiasGelu"]
    assert not any(node.op_type == "Erf" for node in graph.node)
    assert manifest["parity"]["max_abs_diff"] <= manifest["parity"]["tolerance"]
