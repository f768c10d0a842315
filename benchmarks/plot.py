"""Plots for the benchmarks page, from the JSON lines the bench commands print.

    shopcast bench pipeline --events 100000 --json > benchmarks/results/pipeline.json
    shopcast bench inference --json > benchmarks/results/inference.json
    python benchmarks/plot.py

(and, when present, results/pipeline_previous.json, pipeline_before.json and
pipeline_one_block.json: other runs whose workers are drawn beside the default one; see
README.md for their commands)

writes benchmarks/throughput.png, benchmarks/latency.png, benchmarks/inference.png and
(for a run that measured CPU) benchmarks/cpu.png next to this file.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

HERE = Path(__file__).parent
RESULTS = HERE / "results"
# Other pipeline runs drawn beside the default one: results file -> bar label.
OTHER_RUNS = {
    "pipeline_previous.json": "worker previous\n(cfa5ed5)",
    "pipeline_before.json": "worker before\n(4ecddb3)",
    "pipeline_one_block.json": "worker, 1-block\nmodel (1606111)",
}


def last_json(path: Path) -> dict:
    """The last JSON object line of a file (the bench commands print one)."""
    lines = [line for line in path.read_text().splitlines() if line.startswith("{")]
    if not lines:
        sys.exit(f"{path} holds no JSON line; run the bench command with --json into it")
    return json.loads(lines[-1])


def throughput(pipeline: dict, others: dict[str, dict]) -> None:
    """The raw loop and the worker of ``pipeline``, and the workers of other runs.

    Each worker bar is labelled with the ratio to the raw loop of its own run.
    """
    fig, ax = plt.subplots(figsize=(7, 3.8))
    names = ["raw aiokafka\npassthrough", "shopcast worker\n(default bundle)"]
    values = [pipeline["raw_eps"], pipeline["worker_eps"]]
    ratios = [None, pipeline["throughput_ratio"]]
    for name, run in others.items():
        names.append(name)
        values.append(run["worker_eps"])
        ratios.append(run["throughput_ratio"])
    colours = ["#888888", "#2b6cb0"] + ["#90b4dd"] * len(others)
    bars = ax.bar(names, values, color=colours)
    for bar, value, ratio in zip(bars, values, ratios, strict=True):
        label = f"{value:,.0f}/s" + (f"\nratio {ratio:.3f}" if ratio is not None else "")
        ax.annotate(label, (bar.get_x() + bar.get_width() / 2, value), ha="center",
                    va="bottom", fontsize=8)
    ax.set_yscale("log")
    ax.set_ylabel("events per second")
    ax.tick_params(axis="x", labelsize=8)
    ax.set_title("Throughput (each ratio against the raw loop of its own run)")
    fig.tight_layout()
    fig.savefig(HERE / "throughput.png", dpi=120)


def latency(pipeline: dict) -> None:
    fig, ax = plt.subplots(figsize=(6, 3.5))
    levels = sorted(pipeline["latency_ms"], key=lambda k: float(k.rstrip("%")))
    raw = pipeline.get("raw_latency_ms", {})
    for q, style, colour in (("p50", "o", "C0"), ("p95", "s", "C1"), ("p99", "^", "C2")):
        ax.plot([pipeline["latency_ms"][lv]["offered_eps"] for lv in levels],
                [pipeline["latency_ms"][lv][q] for lv in levels], style + "-", color=colour,
                label=f"worker {q}")
        if raw:  # the floor: the raw loop at the same rates
            ax.plot([raw[lv]["offered_eps"] for lv in levels], [raw[lv][q] for lv in levels],
                    style + ":", color=colour, alpha=0.5, label=f"raw loop {q}")
    for lv in levels:
        point = pipeline["latency_ms"][lv]
        ax.annotate(lv, (point["offered_eps"], point["p99"]), textcoords="offset points",
                    xytext=(0, 6), ha="center", fontsize=8)
    ax.set_xlabel("offered load (events/s)")
    ax.set_ylabel("event produced → prediction consumed (ms)")
    ax.set_yscale("log")
    ax.set_title("End-to-end latency at 25/50/75% of the worker's maximum")
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(HERE / "latency.png", dpi=120)


def cpu(pipeline: dict) -> bool:
    """CPU per event of the raw loop and of the worker: where the throughput ratio comes from."""
    measured = pipeline.get("cpu") or {}
    raw, worker = measured.get("raw_us_per_event"), measured.get("worker_us_per_event")
    if raw is None or worker is None:
        return False
    fig, ax = plt.subplots(figsize=(6, 3.2))
    cores = measured.get("cores")
    names = ["raw aiokafka\npassthrough", "shopcast worker"]
    busy = [measured.get("raw_machine_cores"), measured.get("worker_machine_cores")]
    bars = ax.barh(names, [raw, worker], color=["#888888", "#2b6cb0"])
    for bar, value, machine in zip(bars, [raw, worker], busy, strict=True):
        note = f"{value:,.0f} µs" + (f"  (machine: {machine:.1f} of {cores} cores busy)"
                                      if machine is not None else "")
        ax.annotate(note, (value, bar.get_y() + bar.get_height() / 2), xytext=(4, 0),
                    textcoords="offset points", va="center", fontsize=8)
    ax.set_xlim(0, worker * 2.4)
    ax.set_xlabel("CPU µs per event, in the process that moves it")
    ax.set_title("Where the throughput ratio comes from")
    fig.tight_layout()
    fig.savefig(HERE / "cpu.png", dpi=120)
    return True


def inference(result: dict) -> None:
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for name, by_batch in result["us_per_event"].items():
        sizes = sorted(by_batch, key=int)
        ax.plot([int(b) for b in sizes], [by_batch[b] for b in sizes], "o-", label=name)
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("batch size")
    ax.set_ylabel("µs per event (one thread)")
    ax.set_title("Model cost per event")
    ax.legend()
    fig.tight_layout()
    fig.savefig(HERE / "inference.png", dpi=120)


def main() -> None:
    """Draw every plot whose results file exists."""
    done = []
    if (RESULTS / "pipeline.json").exists():
        pipeline = last_json(RESULTS / "pipeline.json")
        others = {label: last_json(RESULTS / name) for name, label in OTHER_RUNS.items()
                  if (RESULTS / name).exists()}
        throughput(pipeline, others)
        latency(pipeline)
        done += ["throughput.png", "latency.png"]
        if cpu(pipeline):
            done.append("cpu.png")
    if (RESULTS / "inference.json").exists():
        inference(last_json(RESULTS / "inference.json"))
        done.append("inference.png")
    print("wrote " + ", ".join(done) if done else f"no results in {RESULTS}")


if __name__ == "__main__":
    main()
