"""Write model bundle v1 directories (the reader and its checks are ``streams.bundle``).

A bundle is assembled in a hidden sibling directory and moved into place in
one rename, so a worker watching the path never sees half a bundle.
"""

from __future__ import annotations

import shutil
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from streams.bundle import (
    CATEGORIES_FILE,
    FORMAT_VERSION,
    ITEMS_FILE,
    MANIFEST,
    MODEL_FILE,
    REPORT_FILE,
    STEP_FILE,
    encoding_section,
    file_sha256,
)
from streams.encoding import MODEL_INPUTS, STATE_OUTPUT, EncodingSpec, Vocabulary


def io_section(spec: EncodingSpec, top_k: int, state: list[int] | None = None
               ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The manifest's ``inputs`` and ``outputs``: names, dtypes and shapes of the ONNX graph.

    ``state`` is the shape of one user's state (n_layers, 2, heads, window - 1,
    head size) for a model with windowed attention.
    """
    inputs: list[dict[str, Any]] = [{"name": n, "dtype": "int64", "shape": ["batch", "seq"]}
                                    for n in MODEL_INPUTS if n != "queries"]
    inputs.append({"name": "queries", "dtype": "int64",
                   "shape": ["batch", "seq", spec.query_slots]})
    outputs = [
        {"name": "next_action", "dtype": "float32", "shape": ["batch", len(spec.actions)]},
        {"name": "top_items", "dtype": "int64", "shape": ["batch", top_k]},
        {"name": "top_scores", "dtype": "float32", "shape": ["batch", top_k]},
        {"name": "purchase_probability", "dtype": "float32", "shape": ["batch"]},
        {"name": "next_event_seconds", "dtype": "float32", "shape": ["batch"]},
    ]
    if state is not None:
        outputs.append({"name": STATE_OUTPUT, "dtype": "float32", "shape": ["batch", *state]})
    return inputs, outputs


def write_bundle(out: Path | str, *, onnx_file: Path, spec: EncodingSpec, items: Vocabulary,
                 categories: Vocabulary, top_k: int, horizon_seconds: int, ttl_seconds: int,
                 model: dict[str, Any], training_data: dict[str, Any], metrics: dict[str, Any],
                 report: dict[str, Any], quantized: bool, step_file: Path | None = None,
                 extra_files: dict[str, Path] | None = None) -> Path:
    """Write a complete bundle at ``out`` (replacing a bundle already there) and return it.

    ``step_file`` is the step graph of a model with windowed attention.
    """
    out = Path(out)
    if out.exists() and any(out.iterdir()) and not (out / MANIFEST).is_file():
        raise FileExistsError(f"{out} exists and is not a model bundle; refusing to replace it. "
                              "Choose another --out or empty the directory.")
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = out.parent / f".{out.name}.writing"
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir()
    shutil.copyfile(onnx_file, staging / MODEL_FILE)
    if step_file is not None:
        shutil.copyfile(step_file, staging / STEP_FILE)
    (staging / ITEMS_FILE).write_bytes(items.to_json())
    (staging / CATEGORIES_FILE).write_bytes(categories.to_json())
    (staging / REPORT_FILE).write_bytes(orjson.dumps(report, option=orjson.OPT_INDENT_2))
    for name, source in (extra_files or {}).items():
        shutil.copyfile(source, staging / name)
    files = {p.name: file_sha256(p) for p in sorted(staging.iterdir()) if p.is_file()}
    created = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    inputs, outputs = io_section(spec, top_k, _state_shape(model) if step_file else None)
    manifest = {
        "format_version": FORMAT_VERSION,
        "model_version": f"{created}-{files[MODEL_FILE][:6]}",
        "created_at": created,
        "encoding": encoding_section(spec, items, categories),
        "inputs": inputs,
        "outputs": outputs,
        "top_k": top_k,
        "purchase_horizon_seconds": horizon_seconds,
        "window_ttl_seconds": ttl_seconds,
        "model": model,
        "training_data": training_data,
        "metrics": metrics,
        "quantized": quantized,
        "files": files,
    }
    (staging / MANIFEST).write_bytes(orjson.dumps(manifest, option=orjson.OPT_INDENT_2))
    _swap_into_place(staging, out)
    return out


def _state_shape(model: dict[str, Any]) -> list[int]:
    """One user's state: (n_layers, keys and values, heads, window - 1, head size)."""
    return [model["n_layers"], 2, model["n_heads"], model["attention_window"] - 1,
            model["d_model"] // model["n_heads"]]


def _swap_into_place(staging: Path, out: Path) -> None:
    if not out.exists():
        staging.rename(out)
        return
    old = out.parent / f".{out.name}.old"
    if old.exists():
        shutil.rmtree(old)
    out.rename(old)
    staging.rename(out)
    shutil.rmtree(old)
