"""Running an exported model with onnxruntime, on the CPU, one batch at a time."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import onnxruntime as ort
from numpy.typing import NDArray

from models.graph import OUTPUT


def session(model: bytes) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    return ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])


def score(
    model: bytes, inputs: Mapping[str, NDArray[Any]], batch_size: int = 4096
) -> NDArray[np.float32]:
    """The model's ``score`` output for every row of ``inputs``."""
    runner = session(model)
    rows = next(iter(inputs.values())).shape[0]
    parts = [
        np.asarray(
            runner.run([OUTPUT], {k: v[i : i + batch_size] for k, v in inputs.items()})[0],
            dtype=np.float32,
        )
        for i in range(0, rows, batch_size)
    ]
    return np.concatenate(parts) if parts else np.zeros(0, np.float32)
