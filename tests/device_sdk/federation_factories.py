"""Small federated model bundles for the device SDK's federation tests."""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

from device_sdk import AnonymousEmbedding, LocalExamples, TrainableModel

ITEMS, DIM, GENRES, HIDDEN, RANK = 30, 4, 3, 6, 1


def bundle_arrays(seed: int = 0) -> dict[str, NDArray[Any]]:
    """A model bundle's arrays, as ``BaseModel.write_bundle`` writes them."""
    rng = np.random.default_rng(seed)
    width = 2 * DIM + RANK + GENRES
    params = {
        "item_emb": rng.normal(0, 0.3, (ITEMS, DIM)),
        "user_proj": rng.normal(0, 0.5, (RANK, DIM)),
        "mlp.w0": rng.normal(0, 0.5, (width, HIDDEN)),
        "mlp.b0": rng.normal(0, 0.1, HIDDEN),
        "mlp.w1": rng.normal(0, 0.5, (HIDDEN, 1)),
        "mlp.b1": np.zeros(1),
    }
    params["item_emb"][0] = 0.0
    quantiles = np.sort(rng.normal(0, 0.3, (4, 11)), axis=1) + np.arange(11) * 1e-3
    quantiles[0] = np.linspace(0.2, 0.8, 11)
    arrays: dict[str, NDArray[Any]] = {
        f"param:{k}": v.astype(np.float32) for k, v in params.items()
    }
    arrays["basis"] = rng.normal(0, 1, (ITEMS, 3)).astype(np.float32)
    arrays["quantiles"] = quantiles.astype(np.float32)
    arrays["rank"] = np.asarray(RANK, np.int64)
    return arrays


def model(seed: int = 0) -> TrainableModel:
    return TrainableModel.from_arrays(bundle_arrays(seed))


def embedding(anonymity: float = 0.5, seed: int = 0) -> AnonymousEmbedding:
    return AnonymousEmbedding.from_arrays(
        bundle_arrays(), anonymity=anonymity, rng=np.random.default_rng(seed)
    )


def examples(items: list[int], seed: int = 0) -> LocalExamples:
    rng = np.random.default_rng(seed)
    n = len(items)
    return LocalExamples(
        item=np.asarray(items, np.int64),
        genres=(rng.random((n, GENRES)) < 0.4).astype(np.float32),
        click=(rng.random(n) < 0.5).astype(np.float32),
    )
