"""Model bundle v1: a directory with the ONNX model, its manifest and vocabularies.

Loading checks everything a worker relies on -- the format version, the
sha256 of every file, the encoding parameters and vocabularies, and the
model's input and output names -- and refuses a bundle that does not match,
with a message that says which part and what to do.

Files: ``model.onnx``, ``manifest.json``, ``items.json``, ``categories.json``,
``evaluation.json`` (the evaluation report) and optionally plots. A model with
windowed attention also has ``step.onnx``, which scores a user's new events
from the state ``model.onnx`` (or ``step.onnx`` itself) returned for the
user's earlier ones; bundles without it are scored window by window.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from streams.contracts import ACTIONS
from streams.encoding import MODEL_INPUTS, MODEL_OUTPUTS, STATE_OUTPUT, EncodingSpec, Vocabulary

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
MODEL_FILE = "model.onnx"
STEP_FILE = "step.onnx"
ITEMS_FILE = "items.json"
CATEGORIES_FILE = "categories.json"
REPORT_FILE = "evaluation.json"


class BundleError(ValueError):
    """A model bundle that is missing, corrupt or made for another encoding."""


@dataclass(frozen=True)
class Bundle:
    """A verified model bundle, ready for the scorer."""

    path: Path
    manifest: dict[str, Any]
    spec: EncodingSpec
    items: Vocabulary
    categories: Vocabulary

    @property
    def model_version(self) -> str:
        """The model version string carried by every prediction."""
        return str(self.manifest["model_version"])

    @property
    def model_path(self) -> Path:
        """Path of the ONNX file."""
        return self.path / MODEL_FILE

    @property
    def step_path(self) -> Path | None:
        """Path of the step graph, if the bundle has one."""
        return self.path / STEP_FILE if STEP_FILE in self.manifest["files"] else None

    @property
    def attention_window(self) -> int:
        """Events each attention layer reads (0: the whole window)."""
        return int(self.manifest.get("model", {}).get("attention_window", 0))

    @property
    def top_k(self) -> int:
        """How many items the graph returns per prediction."""
        return int(self.manifest["top_k"])

    @property
    def horizon_seconds(self) -> int:
        """The purchase horizon that ``purchase_probability`` refers to."""
        return int(self.manifest["purchase_horizon_seconds"])


def file_sha256(path: Path) -> str:
    """Hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def load_bundle(path: Path | str) -> Bundle:
    """Load and verify a bundle directory; raises :class:`BundleError` naming what is wrong."""
    root = Path(path)
    manifest_path = root / MANIFEST
    if not manifest_path.is_file():
        raise BundleError(f"{root} is not a model bundle: {MANIFEST} is missing. Point "
                          "SHOPCAST_BUNDLE_PATH at a directory written by 'shopcast train' "
                          "or 'shopcast export'.")
    try:
        manifest = orjson.loads(manifest_path.read_bytes())
    except orjson.JSONDecodeError as exc:
        raise BundleError(f"{manifest_path} is not valid JSON: {exc}") from None
    version = manifest.get("format_version")
    if version != FORMAT_VERSION:
        raise BundleError(f"{root}: bundle format version {version!r}, this shopcast reads "
                          f"version {FORMAT_VERSION}. Re-export the model with this version.")
    _check_files(root, manifest)
    try:
        spec = EncodingSpec.from_dict(manifest["encoding"]["spec"])
    except (KeyError, TypeError) as exc:
        raise BundleError(f"{root}: the manifest's encoding spec is unreadable ({exc}); this "
                          "bundle was written for another encoding") from None
    if spec.actions != ACTIONS:
        raise BundleError(f"{root}: the bundle's actions {list(spec.actions)} differ from this "
                          f"shopcast's {list(ACTIONS)}")
    items = _vocabulary(root, manifest, "items", ITEMS_FILE)
    categories = _vocabulary(root, manifest, "categories", CATEGORIES_FILE)
    _check_io(root, manifest)
    for key in ("model_version", "top_k", "purchase_horizon_seconds", "created_at"):
        if key not in manifest:
            raise BundleError(f"{root}: the manifest lacks {key!r}")
    return Bundle(root, manifest, spec, items, categories)


def _check_files(root: Path, manifest: dict[str, Any]) -> None:
    files = manifest.get("files")
    if not isinstance(files, dict) or MODEL_FILE not in files:
        raise BundleError(f"{root}: the manifest does not list the sha256 of {MODEL_FILE}")
    for name, expected in files.items():
        target = root / name
        if Path(name).name != name:
            raise BundleError(f"{root}: the manifest names a file outside the bundle: {name!r}")
        if not target.is_file():
            raise BundleError(f"{root}: {name} is listed in the manifest but missing")
        actual = file_sha256(target)
        if actual != expected:
            raise BundleError(f"{root}: {name} is corrupt or was changed after export: sha256 "
                              f"{actual[:12]}… but the manifest records {str(expected)[:12]}…")


def _vocabulary(root: Path, manifest: dict[str, Any], key: str, filename: str) -> Vocabulary:
    try:
        vocab = Vocabulary.from_json((root / filename).read_bytes())
    except (OSError, ValueError) as exc:
        raise BundleError(f"{root}: cannot read {filename}: {exc}") from None
    recorded = manifest["encoding"].get(key, {})
    if recorded.get("size") != len(vocab) or recorded.get("sha256") != vocab.digest():
        raise BundleError(
            f"{root}: {filename} does not match the manifest's encoding (size {len(vocab)} vs "
            f"{recorded.get('size')}, sha256 {vocab.digest()[:12]}… vs "
            f"{str(recorded.get('sha256'))[:12]}…)")
    return vocab


def _check_io(root: Path, manifest: dict[str, Any]) -> None:
    inputs = [i.get("name") for i in manifest.get("inputs", [])]
    outputs = [o.get("name") for o in manifest.get("outputs", [])]
    if tuple(inputs) != MODEL_INPUTS or tuple(outputs) not in (
            MODEL_OUTPUTS, (*MODEL_OUTPUTS, STATE_OUTPUT)):
        raise BundleError(f"{root}: model inputs {inputs} / outputs {outputs} differ from the "
                          f"encoding's {list(MODEL_INPUTS)} / {list(MODEL_OUTPUTS)}")


def encoding_section(spec: EncodingSpec, items: Vocabulary, categories: Vocabulary
                     ) -> dict[str, Any]:
    """The manifest's ``encoding`` section, shared by the bundle writer and the checks."""
    return {
        "spec": spec.to_dict(),
        "items": {"size": len(items), "sha256": items.digest()},
        "categories": {"size": len(categories), "sha256": categories.digest()},
    }
