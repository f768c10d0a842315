"""Private training (DP-SGD): epsilon is spent and recorded, per-user clipping is real."""

from __future__ import annotations

import math

import orjson
import pytest
import torch

pytest.importorskip("opacus")

from model_export import privacy_training  # noqa: E402
from model_export.data import prepare, read_events, training_chunks  # noqa: E402
from model_export.model import ModelConfig, NextActionModel  # noqa: E402
from model_export.train import TrainOptions, set_determinism, train  # noqa: E402
from streams.encoding import EncodingSpec  # noqa: E402

TINY = {"epochs": 1, "batch_size": 32, "d_model": 32, "max_len": 20, "seed": 1, "threads": 1,
        "quiet": True, "log_epochs": False}


def test_private_run_records_epsilon_in_checkpoint_and_manifest(tiny_log):
    from model_export.export import _bundle_fields, _training_summary

    log = read_events(tiny_log)
    checkpoint, _ = train(log, TrainOptions(dp=True, dp_noise_multiplier=1.0, **TINY))
    dp = checkpoint.training["differential_privacy"]
    assert math.isfinite(dp["epsilon"]) and dp["epsilon"] > 0
    assert dp["unit"] == "user" and dp["users"] == checkpoint.training["users"]
    assert dp["delta"] == pytest.approx(min(1e-5, 1 / (10 * dp["users"])))
    assert dp["steps"] == math.ceil(1 / dp["sample_rate"])
    # Less noise for the same steps spends more privacy.
    noisier = privacy_training.PrivacySettings.for_users(dp["users"], 32, 2.0, 1.0, None)
    assert privacy_training.epsilon(noisier, dp["steps"]) < dp["epsilon"]

    # What export writes into the manifest's training_data and the report (the ONNX
    # export itself is tested elsewhere and takes half a minute).
    assert _bundle_fields(checkpoint, 10)["training_data"]["differential_privacy"] == dp
    assert _training_summary(checkpoint)["differential_privacy"] == dp
    assert orjson.loads(orjson.dumps(dp)) == dp  # plain JSON


def _step(log, max_grad_norm: float):
    set_determinism(0, 1)
    data = prepare(log, EncodingSpec(max_len=20))
    chunks = training_chunks(data)
    tensors = {k: torch.from_numpy(v) for k, v in chunks.inputs.items()}
    tensors.update(next_action=torch.from_numpy(chunks.next_action),
                   next_item=torch.from_numpy(chunks.next_item),
                   purchase=torch.from_numpy(chunks.purchase),
                   log_seconds=torch.from_numpy(chunks.log_seconds))
    model = NextActionModel(ModelConfig.for_encoding(
        data.spec, len(data.items), len(data.categories), d_model=32)).eval()  # no dropout
    settings = privacy_training.PrivacySettings.for_users(len(data.users), 8, 0.0,
                                                          max_grad_norm, None)
    step = privacy_training.PrivateStep(model, settings, 0.5, 0.2,
                                        torch.from_numpy(chunks.user))
    users = torch.arange(6)
    lengths = (tensors["actions"] > 0).sum(dim=1)
    step.gradients(users, tensors, lengths, torch.Generator().manual_seed(0))
    expected = settings.sample_rate * settings.users
    summed = {k: p.grad * expected for k, p in model.named_parameters()}
    return model, step, summed, tensors, users


def test_per_user_gradients_are_exact_and_clipped(tiny_log):
    log = read_events(tiny_log)
    # No clipping in effect: the per-user sum is the ordinary gradient of the users' loss.
    model, step, unclipped, tensors, users = _step(log, max_grad_norm=1e9)
    model.zero_grad()
    rows = torch.cat([step.by_user[int(u)] for u in users])
    total = sum(step.loss({k: v[r] for k, v in tensors.items()}) for r in rows.tolist())
    total.backward()
    for name, p in model.named_parameters():
        assert torch.allclose(unclipped[name], p.grad, atol=1e-5), name
    # A tiny clipping norm bounds the sum by one norm per user, far below the unclipped sum.
    _, _, clipped, _, users = _step(log, max_grad_norm=1e-3)
    norm = lambda g: torch.sqrt(sum(v.pow(2).sum() for v in g.values()))  # noqa: E731
    assert norm(clipped) <= 1e-3 * len(users) * (1 + 1e-4)
    assert norm(unclipped) > 100 * norm(clipped)
