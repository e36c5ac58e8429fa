"""POST /v1/coda/retrieve: nearest pool samples for a device's anonymous queries."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import inspect

from cloud.app import create_app
from cloud.core.settings import Settings
from tests.cloud.coda.factories import DIM, axis_query, create_pool, filled_pool
from tests.factories import ADMIN, changed, device_headers, register_device


def _retrieve(client: TestClient, headers: dict[str, str], **body: Any) -> Any:
    return client.post("/v1/coda/retrieve", headers=headers, json={"pool": "movies", **body})


@pytest.fixture
def device(client: TestClient) -> dict[str, str]:
    return device_headers(register_device(client))


def test_retrieve_returns_the_nearest_samples_best_first(
    client: TestClient, device: dict[str, str]
) -> None:
    """A query along one axis gets only that axis's samples, in falling similarity."""
    filled_pool(client, n=40)
    response = _retrieve(client, device, queries=[axis_query(2)], k=10)
    assert response.status_code == 200, response.text
    body = response.json()
    assert len(body["samples"]) == 10 and body["pool_size"] == 40
    assert {s["features"]["axis"] for s in body["samples"]} == {2.0}
    scores = [s["score"] for s in body["samples"]]
    assert scores == sorted(scores, reverse=True)
    assert len(body["samples"][0]["embedding"]) == DIM


def test_retrieve_deduplicates_across_queries(client: TestClient, device: dict[str, str]) -> None:
    """Two identical queries return each sample once."""
    filled_pool(client, n=40)
    body = _retrieve(client, device, queries=[axis_query(1), axis_query(1)], k=8).json()
    ids = [s["id"] for s in body["samples"]]
    assert len(ids) == len(set(ids)) == 8


def test_retrieve_adds_distinct_random_samples(client: TestClient, device: dict[str, str]) -> None:
    """`random` adds that many distinct samples drawn from the whole pool."""
    filled_pool(client, n=40)
    body = _retrieve(client, device, queries=[axis_query(0)], k=5, random=12).json()
    ids = [s["id"] for s in body["random_samples"]]
    assert len(ids) == len(set(ids)) == 12
    assert all(s["score"] is None for s in body["random_samples"])


def test_retrieve_from_an_unbuilt_pool_is_not_ready(
    client: TestClient, device: dict[str, str]
) -> None:
    """A pool without a snapshot answers pool_not_ready, telling the device to retry."""
    create_pool(client)
    response = _retrieve(client, device, queries=[axis_query(0)])
    assert response.status_code == 409
    assert response.json()["error"]["code"] == "pool_not_ready"


def test_retrieve_refuses_hostile_queries(client: TestClient, device: dict[str, str]) -> None:
    """Wrong lengths, ragged or too many queries, huge k, odd pools and extra fields get 4xx."""
    filled_pool(client, n=10)
    short = _retrieve(client, device, queries=[[1.0, 0.0]])
    assert short.status_code == 422
    assert short.json()["error"]["code"] == "embedding_dim_mismatch"
    hostile: list[dict[str, Any]] = [
        {"queries": []},
        {"queries": [axis_query(0), [1.0]]},
        {"queries": [axis_query(0)] * 33},
        {"queries": [axis_query(0)], "k": 0},
        {"queries": [axis_query(0)], "k": 10_000},
        {"queries": [axis_query(0)], "random": -1},
        {"queries": [[1e300] * DIM]},
        {"queries": [axis_query(0)], "device_id": "abc"},
        {"queries": [axis_query(0)], "pool": "../../etc"},
        {"queries": "nope"},
    ]
    for body in hostile:
        assert _retrieve(client, device, **body).status_code == 422, body
    missing = _retrieve(client, device, queries=[axis_query(0)], pool="missing")
    assert missing.status_code == 404


def test_retrieve_needs_a_device_token(client: TestClient) -> None:
    """Admin keys get a 403 and anonymous callers a 401: retrieval is for devices."""
    filled_pool(client, n=10)
    assert _retrieve(client, ADMIN, queries=[axis_query(0)]).status_code == 403
    assert _retrieve(client, {}, queries=[axis_query(0)]).status_code == 401


def test_retrieve_counts_without_storing_who_asked(
    client: TestClient, device: dict[str, str]
) -> None:
    """Statistics count retrievals and samples returned; no CoDA table has a device column."""
    filled_pool(client, n=20)
    for _ in range(3):
        assert _retrieve(client, device, queries=[axis_query(0)], k=4).status_code == 200
    pool = client.get("/v1/coda/pools/movies", headers=ADMIN).json()
    assert pool["retrievals"] == 3 and pool["samples_returned"] == 12
    context = client.app.state.context  # type: ignore[attr-defined]
    inspector = inspect(context.db.engine)
    for table in ("coda_pools", "coda_samples"):
        columns = {c["name"] for c in inspector.get_columns(table)}
        assert not any("device" in c or "token" in c for c in columns), columns


@pytest.fixture
def tight_client(settings: Settings) -> Iterator[TestClient]:
    """An app whose retrieval cap is 5 and that allows 2 retrievals back to back."""
    tight = changed(
        settings, coda_max_results=5, coda_retrieve_burst=2, coda_retrieve_per_minute=1.0
    )
    with TestClient(create_app(tight), raise_server_exceptions=False) as test_client:
        yield test_client


def test_retrieve_is_capped(tight_client: TestClient) -> None:
    """More nearest samples than the cap are cut to the cap and flagged as capped."""
    filled_pool(tight_client, n=40)
    device = device_headers(register_device(tight_client))
    body = _retrieve(tight_client, device, queries=[axis_query(0), axis_query(1)], k=10).json()
    assert len(body["samples"]) == 5 and body["capped"] is True


def test_retrieve_is_rate_limited_per_device(tight_client: TestClient) -> None:
    """Beyond its burst a device gets 429 with Retry-After; another device still gets answers."""
    filled_pool(tight_client, n=10)
    first = device_headers(register_device(tight_client))
    for _ in range(2):
        assert _retrieve(tight_client, first, queries=[axis_query(0)]).status_code == 200
    limited = _retrieve(tight_client, first, queries=[axis_query(0)])
    assert limited.status_code == 429
    assert limited.json()["error"]["code"] == "rate_limited"
    assert int(limited.headers["retry-after"]) >= 1
    second = device_headers(register_device(tight_client))
    assert _retrieve(tight_client, second, queries=[axis_query(0)]).status_code == 200


def test_snapshot_survives_a_restart(settings: Settings) -> None:
    """A restarted app loads the persisted snapshot and answers before any new build."""
    with TestClient(create_app(settings), raise_server_exceptions=False) as first:
        version = filled_pool(first, n=16)["snapshot"]["version"]
        device = device_headers(register_device(first))
    with TestClient(create_app(settings), raise_server_exceptions=False) as second:
        pool = second.get("/v1/coda/pools/movies", headers=ADMIN).json()
        assert pool["snapshot"]["version"] == version
        response = _retrieve(second, device, queries=[axis_query(3)], k=3)
        assert response.status_code == 200
        assert {s["features"]["axis"] for s in response.json()["samples"]} == {3.0}
