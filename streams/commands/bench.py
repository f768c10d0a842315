"""``shopcast bench pipeline|inference``: the throughput, latency and inference figures."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Subcommands of ``shopcast bench``."""
    sub = parser.add_subparsers(dest="what", required=True)
    pipe = sub.add_parser("pipeline", help="raw aiokafka passthrough vs the worker, and "
                          "end-to-end latency at 25/50/75%% of the worker's maximum")
    pipe.add_argument("--events", type=int, default=100_000, help="events in the log")
    pipe.add_argument("--latency-seconds", type=float, default=15.0,
                      help="seconds of offered load per latency level (default: 15)")
    pipe.add_argument("--keep-topics", action="store_true",
                      help="keep the run's bench-<run>.* topics and state (default: delete them)")
    pipe.add_argument("--json", action="store_true", help="print one JSON line at the end")
    inf = sub.add_parser("inference", help="per-event cost of the model: batch sizes, "
                         "onnxruntime vs PyTorch eager, int8 vs fp32")
    inf.add_argument("--bundle", type=Path, default=None,
                     help="bundle (default: SHOPCAST_BUNDLE_PATH)")
    inf.add_argument("--checkpoint", type=Path, default=None,
                     help="PyTorch checkpoint of the same model, for the eager comparison "
                     "(default: the bundle's checkpoint.pt when present)")
    inf.add_argument("--seconds", type=float, default=2.0,
                     help="time per measurement (default: 2)")
    inf.add_argument("--json", action="store_true", help="print one JSON line at the end")


def run(args: argparse.Namespace) -> int:
    """Run the chosen benchmark."""
    import orjson

    from streams.settings import load_settings

    settings = load_settings()
    say = (lambda text: print(text, file=sys.stderr)) if args.json else print
    if args.what == "pipeline":
        result = _pipeline(settings, args, say)
    else:
        from streams.bench.inference import run_inference_bench

        result = run_inference_bench(args.bundle or settings.bundle_path, args.checkpoint,
                                     seconds=args.seconds, say=say)
    if args.json:
        print(orjson.dumps(result).decode())
    return 0


def _pipeline(settings, args, say):  # type: ignore[no-untyped-def]
    import asyncio

    from streams.bench.pipeline import run_pipeline_bench
    from streams.embedded_broker import EmbeddedBroker, free_port

    broker = None
    if "SHOPCAST_BOOTSTRAP_SERVERS" not in os.environ:
        broker = EmbeddedBroker(free_port())
        broker.start()
        broker.wait_ready()
        settings = settings.model_copy(update={"bootstrap_servers": broker.bootstrap})
        say(f"no SHOPCAST_BOOTSTRAP_SERVERS: using the embedded broker at {broker.bootstrap}")
    try:
        result = asyncio.run(run_pipeline_bench(settings, args.events,
                                                latency_seconds=args.latency_seconds,
                                                keep_topics=args.keep_topics, say=say))
    finally:
        if broker is not None:
            broker.stop()
    data = result.to_json()
    cpu = data["cpu"]
    per_event = "" if cpu.get("worker_us_per_event") is None else (
        f" | CPU per event: raw {cpu['raw_us_per_event']:,.0f} µs, worker "
        f"{cpu['worker_us_per_event']:,.0f} µs")
    say(f"raw {data['raw_eps']:,.0f} ev/s | worker {data['worker_eps']:,.0f} ev/s | ratio "
        f"{data['throughput_ratio']:.3f}{per_event}")
    return data
