"""Router test data: a small logged workload where one word marks the hard requests."""

from __future__ import annotations

import random
from typing import Any

from fastapi.testclient import TestClient

from tests.factories import ADMIN

EASY_WORDS = ["capital", "colour", "river", "animal", "season", "planet", "city", "song"]
SMALL_SPEC = {"dim": 4096}


def workload(
    n: int, *, seed: int = 0, metrics: tuple[str, ...] = ("correct",)
) -> list[dict[str, Any]]:
    """``n`` observations: texts with "integral" are hard (the cloud wins every metric),
    the rest easy (the edge is as good)."""
    rng = random.Random(seed)  # noqa: S311  # test data, not secrets
    items = []
    for i in range(n):
        hard = i % 3 == 0
        words = rng.sample(EASY_WORDS, 3) + (["integral"] if hard else [])
        rng.shuffle(words)
        text = f"question {i}: " + " ".join(words)
        items.append(
            {
                "text": text,
                "edge": {m: 0.0 if hard else 1.0 for m in metrics},
                "cloud": {m: 1.0 for m in metrics},
            }
        )
    return items


def create_router(client: TestClient, name: str = "qa", **body: Any) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "name": name,
        "metrics": [{"name": "correct", "weight": 1.0}],
        "budget": 0.35,
        "window": 50,
        "feature_spec": SMALL_SPEC,
        **body,
    }
    response = client.post("/v1/routers", headers=ADMIN, json=payload)
    assert response.status_code == 201, response.text
    result: dict[str, Any] = response.json()
    return result


def trained_router(
    client: TestClient, name: str = "qa", n: int = 90, **body: Any
) -> dict[str, Any]:
    """A router with one version trained on ``workload(n)``."""
    create_router(client, name, **body)
    response = client.post(
        f"/v1/routers/{name}/observations", headers=ADMIN, json={"items": workload(n)}
    )
    assert response.status_code == 200, response.text
    response = client.post(f"/v1/routers/{name}/train", headers=ADMIN, json={"epochs": 150})
    assert response.status_code == 201, response.text
    version: dict[str, Any] = response.json()
    return version
