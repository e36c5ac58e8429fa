"""On-device learning test data: a small random edge model split into backbone and head,
and labelled samples whose label a head over the backbone's activations can learn."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from device_sdk import Backbone, Head, LocalSamples
from models.coda_split import split_edge
from models.edge import EdgeConfig, EdgeModel

GENRES, VOCAB, HISTORY = 19, 60, 20


@dataclass(frozen=True)
class Split:
    backbone: bytes
    head: Head
    direction: np.ndarray  # labels are activation @ direction above its median


def split(seed: int = 0) -> Split:
    model = EdgeModel(VOCAB, GENRES, EdgeConfig(history=HISTORY, dim=8, hidden=16))
    params = model.init_params(np.random.default_rng(seed))
    parts = split_edge(model.export(params, {}).SerializeToString())
    direction = np.random.default_rng(seed + 1).normal(size=16).astype(np.float32)
    return Split(parts.backbone, Head(parts.head_w, float(parts.head_b)), direction)


def inputs(n: int, seed: int, items: tuple[int, int] = (1, VOCAB)) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "item": rng.integers(*items, n).astype(np.int64),
        "history": rng.integers(*items, (n, HISTORY)).astype(np.int64),
        "genres": (rng.random((n, GENRES)) > 0.8).astype(np.float32),
    }


def labels(backbone: Backbone, arrays: dict[str, np.ndarray], direction: np.ndarray) -> Any:
    score = backbone.activations(arrays) @ direction
    return (score > np.median(score)).astype(np.float32)


def local_samples(
    backbone: Backbone, direction: np.ndarray, n: int = 60, seed: int = 7
) -> LocalSamples:
    """``n`` samples of one 'user' (items from a narrow range), labelled by ``direction``."""
    arrays = inputs(n, seed, items=(1, 20))
    return LocalSamples(
        arrays, labels(backbone, arrays, direction), [f"local:{i}" for i in range(n)]
    )
