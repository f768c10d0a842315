"""Training checkpoints: the model's config and weights with everything export needs.

A checkpoint is one ``.pt`` file readable with ``torch.load(weights_only=True)``:
plain dicts, lists, numbers, strings and tensors only, never pickled classes,
so loading one cannot run code.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from model_export.model import ModelConfig, NextActionModel
from streams.encoding import EncodingSpec, Vocabulary

# 3: windowed attention, and the copy pointer reads the events' own embeddings
FORMAT = "shopcast-checkpoint-3"


@dataclass
class Checkpoint:
    """A trained model and the encoding it was trained with."""

    config: ModelConfig
    state_dict: dict[str, torch.Tensor]
    spec: EncodingSpec
    items: Vocabulary
    categories: Vocabulary
    horizon_seconds: int
    ttl_seconds: int
    # What was trained on and how: log path, sha256, sizes, epochs, validation metrics.
    training: dict[str, Any] = field(default_factory=dict)
    # Real left-padded windows (int64 tensors by input name) for the export parity check.
    samples: dict[str, torch.Tensor] = field(default_factory=dict)

    def model(self) -> NextActionModel:
        """The network with the trained weights, in eval mode."""
        model = NextActionModel(self.config)
        model.load_state_dict(self.state_dict)
        return model.eval()

    def save(self, path: Path | str) -> Path:
        """Write the checkpoint file."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save({
            "format": FORMAT,
            "config": self.config.to_dict(),
            "state_dict": self.state_dict,
            "spec": self.spec.to_dict(),
            "items": self.items.tokens,
            "categories": self.categories.tokens,
            "horizon_seconds": self.horizon_seconds,
            "ttl_seconds": self.ttl_seconds,
            "training": self.training,
            "samples": self.samples,
        }, path)
        return path

    @classmethod
    def load(cls, path: Path | str) -> Checkpoint:
        """Read a checkpoint written by :meth:`save`."""
        data = torch.load(Path(path), map_location="cpu", weights_only=True)
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise ValueError(f"{path} is not a shopcast checkpoint ({FORMAT}); write one with "
                             "'shopcast train'")
        return cls(
            config=ModelConfig(**data["config"]),
            state_dict=data["state_dict"],
            spec=EncodingSpec.from_dict(data["spec"]),
            items=Vocabulary(data["items"]),
            categories=Vocabulary(data["categories"]),
            horizon_seconds=int(data["horizon_seconds"]),
            ttl_seconds=int(data["ttl_seconds"]),
            training=data.get("training", {}),
            samples=data.get("samples", {}),
        )
