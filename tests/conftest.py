"""Shared fixtures: a tiny trained bundle built with the repo's own training and export.

``tiny_bundle`` trains a small model on a small log from the repo's shop
simulator (200 users, 150 items, 10 days), exports it with the same code as
``shopcast export`` and returns the bundle directory. It is built once per
test session, in a temporary directory, in about half a minute.
"""

from __future__ import annotations

from pathlib import Path

import pytest

TINY_SHOP = {"users": 200, "items": 150, "days": 10, "seed": 3}


@pytest.fixture(scope="session")
def tiny_log(tmp_path_factory) -> Path:
    """A small simulated JSON Lines event log (about 5,000 events) of :data:`TINY_SHOP`."""
    from model_export.simulator import simulate

    path = tmp_path_factory.mktemp("tiny-log") / "events.jsonl"
    path.write_bytes(b"".join(simulate(**TINY_SHOP).lines))  # each line ends with a newline
    return path


@pytest.fixture(scope="session")
def tiny_trained(tiny_log, tmp_path_factory):
    """(checkpoint path, checkpoint) of a tiny model trained on ``tiny_log``."""
    from model_export.data import read_events
    from model_export.train import TrainOptions, train

    options = TrainOptions(epochs=3, batch_size=64, d_model=32, max_len=20, patience=2,
                           seed=1, threads=1, quiet=True, log_epochs=False)
    checkpoint, _ = train(read_events(tiny_log), options, log_path=str(tiny_log))
    path = checkpoint.save(tmp_path_factory.mktemp("tiny-checkpoint") / "tiny.pt")
    return path, checkpoint


@pytest.fixture(scope="session")
def tiny_bundle(tiny_trained, tiny_log, tmp_path_factory) -> Path:
    """Path of a verified model bundle (accepted by ``streams.bundle.load_bundle``)."""
    from model_export.data import read_events
    from model_export.export import export_bundle

    _, checkpoint = tiny_trained
    out = tmp_path_factory.mktemp("tiny-bundle") / "bundle"
    return export_bundle(checkpoint, out, top_k=20, log=read_events(tiny_log), plot=False)
