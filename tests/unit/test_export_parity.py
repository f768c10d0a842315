"""Export: parity with PyTorch at several shapes, a broken export fails, int8, determinism."""

import numpy as np
import onnxruntime as ort
import pytest
import torch

from model_export.checkpoint import Checkpoint
from model_export.data import read_events
from model_export.export import ExportError, export_bundle, parity_check
from model_export.train import TrainOptions, train
from streams.bundle import load_bundle
from streams.encoding import MODEL_INPUTS


@pytest.mark.parametrize("batch, length", [(1, 1), (2, 3), (7, 20), (24, 11)])
def test_onnx_matches_pytorch_on_real_windows(tiny_trained, tiny_bundle, batch, length):
    _, checkpoint = tiny_trained
    model = checkpoint.model()
    session = ort.InferenceSession(str(tiny_bundle / "model.onnx"))
    samples = checkpoint.samples
    feeds = {k: v[:batch, -length:].contiguous() for k, v in samples.items()}
    assert feeds["actions"][:, -1].gt(0).all(), "the newest event is always real"
    with torch.no_grad():
        encoded = model(*(feeds[k] for k in MODEL_INPUTS))  # every position, every block
        h = encoded.hidden[:, -1]
        probs = np.pad(model.item_probs(encoded, feeds["items"]).numpy(), ((0, 0), (3, 0)))
        action = torch.softmax(model.action_logits(h), -1).numpy()
    got = session.run(None, {k: v.numpy() for k, v in feeds.items()})
    assert got[0].shape == (min(batch, len(samples["actions"])), 5)
    assert np.abs(got[0] - action).max() <= 1e-4
    assert np.abs(np.take_along_axis(probs, got[1], axis=1) - got[2]).max() <= 1e-4
    assert np.abs(np.sort(probs, axis=1)[:, ::-1][:, :20] - got[2]).max() <= 1e-4


def test_checkpoint_round_trip_and_parity_check(tiny_trained, tiny_bundle):
    path, _ = tiny_trained
    checkpoint = Checkpoint.load(path)
    model = checkpoint.model()
    onnx_path = tiny_bundle / "model.onnx"
    result = parity_check(model, onnx_path, checkpoint.samples, top_k=20)
    assert result.max_abs_diff <= 1e-4 and len(result.shapes) >= 4
    # A graph that no longer matches the weights must fail the check.
    with torch.no_grad():
        model.action_head.bias[0] += 1.0
    with pytest.raises(ExportError, match="disagree on next_action"):
        parity_check(model, onnx_path, checkpoint.samples, top_k=20)


def test_int8_bundle_loads_and_records_the_metric_change(tiny_trained, tiny_log, tmp_path):
    _, checkpoint = tiny_trained
    out = export_bundle(checkpoint, tmp_path / "int8", top_k=10, int8=True,
                        log=read_events(tiny_log), plot=False)
    bundle = load_bundle(out)
    assert bundle.manifest["quantized"] is True
    change = bundle.manifest["metrics"]["int8_change"]
    assert set(change) >= {"ndcg@10", "action_accuracy", "purchase_auc"}
    fp32 = bundle.manifest["metrics"]["model_fp32"]["ndcg@10"]
    assert bundle.manifest["metrics"]["model"]["ndcg@10"] == pytest.approx(
        fp32 + change["ndcg@10"], abs=1e-5)


def test_extra_unlisted_files_do_not_break_loading(tiny_bundle, tmp_path):
    import shutil

    copy = shutil.copytree(tiny_bundle, tmp_path / "copy")
    (copy / "README.md").write_text("how this bundle was made\n")
    assert load_bundle(copy).model_version


def test_training_is_deterministic_for_a_seed(tiny_log):
    log = read_events(tiny_log)
    options = TrainOptions(epochs=1, batch_size=64, d_model=16, max_len=10, seed=5, threads=1,
                           quiet=True, log_epochs=False)
    a, _ = train(log, options)
    b, _ = train(log, options)
    assert a.state_dict.keys() == b.state_dict.keys()
    assert all(torch.equal(a.state_dict[k], b.state_dict[k]) for k in a.state_dict)
    c, _ = train(log, TrainOptions(**{**options.__dict__, "seed": 6}))
    assert not torch.equal(a.state_dict["item.weight"], c.state_dict["item.weight"])
