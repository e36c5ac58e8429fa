"""CoDA pools over HTTP: create, ingest (validated, all or none), snapshot, statistics."""

from __future__ import annotations

import threading
import time
from typing import Any

from fastapi.testclient import TestClient

from tests.cloud.coda.factories import DIM, create_pool, filled_pool, samples
from tests.factories import ADMIN, device_headers, register_device


def _ingest(client: TestClient, body: Any, name: str = "movies") -> Any:
    return client.post(f"/v1/coda/pools/{name}/samples", headers=ADMIN, json=body)


def test_create_pool_answers_its_empty_statistics(client: TestClient) -> None:
    """A new pool has no samples, no snapshot and no retrievals."""
    pool = create_pool(client)
    assert pool["name"] == "movies" and pool["dim"] == DIM
    assert pool["samples"] == 0 and pool["snapshot"] is None and pool["retrievals"] == 0


def test_create_pool_twice_is_a_conflict(client: TestClient) -> None:
    """A second pool with the same name is refused with duplicate_name."""
    create_pool(client)
    response = client.post("/v1/coda/pools", headers=ADMIN, json={"name": "movies", "dim": 4})
    assert response.status_code == 409
    assert response.json()["error"]["code"] == "duplicate_name"


def test_create_pool_refuses_bad_names_and_sizes(client: TestClient) -> None:
    """Names outside the pattern, zero or huge dims, and unknown fields get a 422."""
    for body in (
        {"name": "Bad Name", "dim": 4},
        {"name": "../etc", "dim": 4},
        {"name": "ok", "dim": 0},
        {"name": "ok", "dim": 100_000},
        {"name": "ok", "dim": 4, "extra": 1},
        {"name": "ok", "dim": "4x"},
    ):
        response = client.post("/v1/coda/pools", headers=ADMIN, json=body)
        assert response.status_code == 422, body
    assert client.get("/v1/coda/pools", headers=ADMIN).json()["items"] == []


def test_pools_need_an_admin(client: TestClient) -> None:
    """Device tokens may not create or fill pools; no credentials get a 401."""
    device = register_device(client)
    response = client.post(
        "/v1/coda/pools", headers=device_headers(device), json={"name": "p", "dim": 4}
    )
    assert response.status_code == 403
    assert client.post("/v1/coda/pools", json={"name": "p", "dim": 4}).status_code == 401


def test_ingest_then_snapshot_holds_every_sample(client: TestClient) -> None:
    """After ingesting and building, the snapshot holds all samples and none are pending."""
    pool = filled_pool(client, n=30)
    assert pool["samples"] == 30 and pool["pending_samples"] == 0
    assert pool["snapshot"]["samples"] == 30 and pool["snapshot"]["kind"] == "exact"
    assert pool["snapshot"]["version"] >= 1


def test_ingest_is_all_or_none(client: TestClient) -> None:
    """One sample whose embedding has the wrong length refuses the batch; nothing is stored."""
    create_pool(client)
    batch = samples(5)
    batch[3]["embedding"] = batch[3]["embedding"][:-1]
    response = _ingest(client, {"samples": batch})
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "embedding_dim_mismatch"
    assert "Sample 3" in response.json()["error"]["message"]
    assert client.get("/v1/coda/pools/movies", headers=ADMIN).json()["samples"] == 0


def test_ingest_refuses_hostile_samples(client: TestClient) -> None:
    """Non-finite or huge numbers, odd feature names, oversized features and batches get 422."""
    create_pool(client)
    good = samples(1)[0]
    hostile = [
        {**good, "label": 1e300},
        {**good, "embedding": [1e9] * DIM},
        {**good, "features": {"bad name!": 1.0}},
        {**good, "features": {"x": "text"}},
        {**good, "features": {"x": [0.0] * 5000}},
        {**good, "features": {f"f{i}": 1.0 for i in range(40)}},
        {**good, "features": {"x": {"nested": 1}}},
        {**good, "who": "device-1"},
        {"features": {}, "label": 1.0},
    ]
    for sample in hostile:
        assert _ingest(client, {"samples": [sample]}).status_code == 422, sample
    assert _ingest(client, {"samples": []}).status_code == 422
    assert _ingest(client, {"samples": [good] * 2001}).status_code == 422
    nan = b'{"samples": [{"features": {}, "label": NaN, "embedding": [1,0,0,0,0,0,0,0]}]}'
    response = client.post(
        "/v1/coda/pools/movies/samples",
        headers={**ADMIN, "content-type": "application/json"},
        content=nan,
    )
    assert response.status_code == 422
    assert client.get("/v1/coda/pools/movies", headers=ADMIN).json()["samples"] == 0


def test_ingest_into_an_unknown_pool_is_not_found(client: TestClient) -> None:
    """Samples for a pool that does not exist get pool_not_found naming the known pools."""
    create_pool(client, "other")
    response = _ingest(client, {"samples": samples(1)}, name="missing")
    assert response.status_code == 404
    body = response.json()["error"]
    assert body["code"] == "pool_not_found" and "other" in body["message"]


def test_background_builder_picks_up_ingested_samples(client: TestClient) -> None:
    """Without an explicit build, the background builder makes a snapshot of new samples."""
    create_pool(client)
    assert _ingest(client, {"samples": samples(12)}).status_code == 201
    for _ in range(200):
        pool = client.get("/v1/coda/pools/movies", headers=ADMIN).json()
        if pool["snapshot"] and pool["snapshot"]["samples"] == 12:
            break
        time.sleep(0.05)  # polls the builder's progress; nothing asserts on time
    assert pool["snapshot"]["samples"] == 12


def test_second_ingest_makes_a_new_snapshot_version(client: TestClient) -> None:
    """New samples give the next snapshot version, holding old and new samples."""
    first = filled_pool(client, n=10)
    assert _ingest(client, {"samples": samples(6, seed=1)}).status_code == 201
    second = client.post("/v1/coda/pools/movies/snapshot", headers=ADMIN).json()
    assert second["snapshot"]["version"] > first["snapshot"]["version"]
    assert second["snapshot"]["samples"] == 16


def test_nul_in_a_pool_description_is_422(client: TestClient) -> None:
    """A description with a NUL (PostgreSQL text cannot hold one) is refused, not a 500."""
    body = {"name": "movies", "dim": 4, "description": "bad\x00text"}
    assert client.post("/v1/coda/pools", headers=ADMIN, json=body).status_code == 422


def test_concurrent_creates_of_one_pool_make_one(client: TestClient) -> None:
    """Eight racing creates of one name give one 201 and seven duplicate_name 409s."""
    results: list[int] = []

    def create() -> None:
        body = {"name": "race", "dim": 4}
        results.append(client.post("/v1/coda/pools", headers=ADMIN, json=body).status_code)

    threads = [threading.Thread(target=create) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(results) == [201] + [409] * 7
