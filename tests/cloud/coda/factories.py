"""CoDA test data: pools of samples on a few well-separated directions."""

from __future__ import annotations

from typing import Any

import numpy as np
from fastapi.testclient import TestClient

from tests.factories import ADMIN

DIM = 8


def unit(vector: np.ndarray[Any, Any]) -> list[float]:
    return [float(v) for v in vector / np.linalg.norm(vector)]


def samples(n: int, *, seed: int = 0, axis: int | None = None) -> list[dict[str, Any]]:
    """``n`` samples near one of the first four axes (``axis`` or each in turn); the label
    and feature ``axis`` say which."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        a = axis if axis is not None else i % 4
        vector = rng.normal(0.0, 0.05, DIM)
        vector[a] += 1.0
        out.append(
            {
                "features": {"axis": float(a), "noise": [float(v) for v in vector[:3]]},
                "label": float(a % 2),
                "embedding": unit(vector),
            }
        )
    return out


def create_pool(client: TestClient, name: str = "movies", dim: int = DIM) -> dict[str, Any]:
    response = client.post("/v1/coda/pools", headers=ADMIN, json={"name": name, "dim": dim})
    assert response.status_code == 201, response.text
    result: dict[str, Any] = response.json()
    return result


def filled_pool(client: TestClient, n: int = 40, name: str = "movies") -> dict[str, Any]:
    """A pool with ``n`` samples whose snapshot is built."""
    create_pool(client, name)
    response = client.post(
        f"/v1/coda/pools/{name}/samples", headers=ADMIN, json={"samples": samples(n)}
    )
    assert response.status_code == 201, response.text
    built = client.post(f"/v1/coda/pools/{name}/snapshot", headers=ADMIN)
    assert built.status_code == 200, built.text
    result: dict[str, Any] = built.json()
    return result


def axis_query(axis: int) -> list[float]:
    vector = np.zeros(DIM)
    vector[axis] = 1.0
    return unit(vector)
