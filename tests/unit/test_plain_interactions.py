"""A log of plain interactions (one event type) trains and evaluates like a shop's log.

The tiny simulated shop's item events become a user/item/time CSV, as people export
from their own systems; ``shopcast import`` turns it into an event log of clicks, and
the same training, export and evaluation run on it.
"""

from __future__ import annotations

import csv

import orjson

from model_export.data import read_events
from model_export.evaluate import K, evaluate
from model_export.export import export_bundle
from model_export.importer import Columns, import_table
from model_export.train import TrainOptions, train
from streams.bundle import load_bundle
from streams.eventlog import read_log


def test_plain_interactions_train_export_and_evaluate_against_the_baselines(
        tiny_log, tmp_path):
    table = tmp_path / "interactions.csv"
    with table.open("w", newline="") as fh:
        out = csv.writer(fh)
        out.writerow(["user", "item", "ts"])
        for record in read_log(tiny_log):
            event = orjson.loads(record.value)
            if event.get("item_id"):
                out.writerow([event["user_id"], event["item_id"], event["ts"]])
    log_path = tmp_path / "plain.jsonl"
    report = import_table(table, log_path, Columns(user="user", item="item", time="ts"))
    assert report.events > 1000 and not report.rejected

    log = read_events(log_path)
    options = TrainOptions(epochs=3, batch_size=64, d_model=32, max_len=20, patience=2,
                           seed=1, threads=1, quiet=True, log_epochs=False)
    checkpoint, _ = train(log, options, log_path=str(log_path))
    bundle = load_bundle(export_bundle(checkpoint, tmp_path / "bundle", top_k=20, log=log,
                                       plot=False))
    result = evaluate(bundle, log)

    model, popular = result["model"], result["baselines"]["popular"]
    assert result["n_test"] == model["n"] > 100
    # Every next event is a click: there is little for the action head to learn.
    assert popular["action_accuracy"] == 1.0 and model["action_accuracy"] > 0.95
    # The item ranking is what such a log is for: clearly better than most-popular.
    assert model[f"ndcg@{K}"] > 1.5 * popular[f"ndcg@{K}"]
    assert result["baselines"]["markov"][f"ndcg@{K}"] is not None
