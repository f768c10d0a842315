"""Crash recovery: SIGKILL one of two workers during a replay; count by event id, time the takeover.

    python benchmarks/crash_recovery.py --bootstrap 127.0.0.1:19092 --bundle PATH
    python benchmarks/crash_recovery.py --bundle PATH --events 50000 --standby 0 1

For each standby setting (``table_standby_replicas``), two workers share a replay of
``--events`` toy-shop events on a six-partition topic; one is SIGKILLed after predicting
``--kill-after`` of its share. Printed per run (JSON): predictions, events without one,
duplicated events (with their offsets per partition -- a replay from the dead worker's last
commit), windows that differ from an uninterrupted run's, and the takeover time: from the
kill to the survivor's first prediction on a partition the dead worker owned (read from
``scored_at``). The takeover is mostly the session timeout (10 s, app.py) plus the rebalance
and, without standbys, restoring the dead worker's windows from the changelog.

The same scenario runs in CI (tests/integration/test_crash.py, 6,000 events).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from streams.settings import load_settings  # noqa: E402
from streams.topics import delete_topics, ensure_topics  # noqa: E402
from tests.integration.reliability import crash_run, reference_run, toy_stream  # noqa: E402


def one_run(bootstrap: str, bundle: Path, events: list[dict], standby: int,
            kill_after: float, workdir: Path, keep_topics: bool = False) -> dict[str, object]:
    """One crash run; returns its figures."""
    run_id = f"crash-{uuid.uuid4().hex[:8]}"
    settings = load_settings(
        bootstrap_servers=bootstrap, app_id=run_id, events_topic=f"{run_id}.events",
        predictions_topic=f"{run_id}.predictions", dlq_topic=f"{run_id}.dlq",
        erasure_topic=f"{run_id}.erasure", audit_topic=f"{run_id}.audit", partitions=6,
        bundle_path=bundle, standby_replicas=standby, data_dir=workdir / run_id,
        redelivery_margin=32)  # a fast replay: see tests/integration/test_crash.py
    asyncio.run(ensure_topics(settings))
    try:
        reference = reference_run(settings, events)
        run = crash_run(settings, events, reference, workdir / run_id, kill_after=kill_after,
                        timeout=600)
    finally:
        if not keep_topics:
            asyncio.run(delete_topics(settings, prefixes=[run_id], timeout=60))
    delivery = run.delivery
    differing = delivery.mismatches(reference)
    return {
        "standby_replicas": standby,
        "events": len(events),
        "predictions": len(delivery.records),
        "events_without_prediction": len(delivery.missing),
        "events_duplicated": len(delivery.duplicates),
        "extra_predictions": sum(delivery.duplicates.values()),
        "predictions_differing_from_reference": len(differing),
        "differing_examples": differing[:5],
        "duplicated_offsets_by_partition": {
            str(p): f"{o[0]}..{o[-1]} ({len(o)})" for p, o in sorted(
                run.duplicated_offsets.items())},
        "victim_partitions": sorted(run.victim_partitions),
        "victim_predictions_before_kill": run.killed_after,
        "takeover_ms": run.takeover_ms,
        "windows_differing": len(run.window_problems),
        "logs": str(workdir / run_id),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bootstrap", default="127.0.0.1:19092")
    parser.add_argument("--bundle", type=Path, required=True, help="model bundle directory")
    parser.add_argument("--events", type=int, default=50_000)
    parser.add_argument("--standby", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--kill-after", type=float, default=0.3,
                        help="share of its half of the events the victim predicts first")
    parser.add_argument("--keep-topics", action="store_true",
                        help="keep the run's topics for inspection")
    args = parser.parse_args(argv)
    events = toy_stream(args.events)
    workdir = Path(tempfile.mkdtemp(prefix="shopcast-crash-"))
    results = []
    for standby in args.standby:
        print(f"replaying {len(events)} events, standby replicas {standby}...", flush=True)
        result = one_run(args.bootstrap, args.bundle, events, standby, args.kill_after,
                         workdir, keep_topics=args.keep_topics)
        print(json.dumps(result, indent=2), flush=True)
        results.append(result)
    ok = all(r["events_without_prediction"] == 0 and r["windows_differing"] == 0
             and r["predictions_differing_from_reference"] == 0 for r in results)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
