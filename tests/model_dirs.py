"""Model directories for hot-swap tests: versioned bundles and a ``current`` link.

``make_models(tiny_bundle, root)`` gives ``root/a`` (the tiny bundle), ``root/b`` (the same
model with its item vocabulary in the reverse order, model version ``model-b``: every item
index means another item) and ``root/current -> a``; :func:`switch` is the operator's
atomic link swap. :func:`corrupt_copy` and :func:`mismatched_copy` make bundles a worker
must refuse.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import orjson

from streams.bundle import ITEMS_FILE, MANIFEST, encoding_section, file_sha256
from streams.encoding import EncodingSpec, Vocabulary


def rewrite_manifest(bundle_dir: Path, **changes: object) -> None:
    """Re-sign a bundle directory after its files changed (as the export would have)."""
    manifest = orjson.loads((bundle_dir / MANIFEST).read_bytes())
    items = Vocabulary.from_json((bundle_dir / ITEMS_FILE).read_bytes())
    categories = Vocabulary.from_json((bundle_dir / "categories.json").read_bytes())
    spec = EncodingSpec.from_dict(manifest["encoding"]["spec"])
    manifest["encoding"] = encoding_section(spec, items, categories)
    manifest["files"] = {name: file_sha256(bundle_dir / name) for name in manifest["files"]}
    manifest.update(changes)
    (bundle_dir / MANIFEST).write_bytes(orjson.dumps(manifest))


def make_models(tiny_bundle: Path, root: Path) -> Path:
    """``root`` with bundles ``a`` and ``b`` and ``current -> a``."""
    root.mkdir(parents=True, exist_ok=True)
    shutil.copytree(tiny_bundle, root / "a")
    shutil.copytree(tiny_bundle, root / "b")
    tokens = orjson.loads((root / "b" / ITEMS_FILE).read_bytes())
    (root / "b" / ITEMS_FILE).write_bytes(orjson.dumps(list(reversed(tokens))))
    rewrite_manifest(root / "b", model_version="model-b")
    (root / "current").symlink_to("a")
    return root


def corrupt_copy(root: Path, source: str, name: str) -> Path:
    """A copy of bundle ``source`` whose model file no longer matches its manifest."""
    broken = root / name
    shutil.copytree(root / source, broken)
    data = bytearray((broken / "model.onnx").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (broken / "model.onnx").write_bytes(bytes(data))
    return broken


def mismatched_copy(root: Path, source: str, name: str) -> Path:
    """A copy of ``source`` with two items fewer, re-signed: every hash matches, but the model
    was trained for more items than its vocabulary has."""
    other = root / name
    shutil.copytree(root / source, other)
    tokens = orjson.loads((other / ITEMS_FILE).read_bytes())
    (other / ITEMS_FILE).write_bytes(orjson.dumps(tokens[:-2]))
    # The manifest still says how many items the model was trained for, as an export does.
    rewrite_manifest(other, model_version=f"model-{name}")
    return other


def switch(root: Path, target: str) -> None:
    """The operator's atomic switch: a new link renamed over ``current``."""
    (root / "current.new").symlink_to(target)
    os.replace(root / "current.new", root / "current")
