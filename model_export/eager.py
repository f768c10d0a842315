"""The trained model in PyTorch eager mode, for the inference benchmark's comparison.

Kept out of ``streams/`` so that serving code never imports torch: the benchmark
imports this module only when it can (the ``train`` extra is installed).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from model_export.checkpoint import Checkpoint
from model_export.model import Predictor
from streams.encoding import MODEL_INPUTS


def eager_predictor(checkpoint: Path, top_k: int) -> Callable[[dict[str, np.ndarray]], Any]:
    """A callable scoring a batch of model inputs with the checkpoint's weights, one thread."""
    model = Predictor(Checkpoint.load(checkpoint).model(), top_k)
    model.train(False)  # inference: no dropout
    torch.set_num_threads(1)

    def run(batch: dict[str, np.ndarray]) -> Any:
        with torch.inference_mode():
            return model(*(torch.from_numpy(batch[name]) for name in MODEL_INPUTS))
    return run
