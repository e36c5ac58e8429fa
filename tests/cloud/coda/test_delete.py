"""DELETE /v1/coda/pools/{name}: the pool, its samples and its snapshots go, everywhere."""

from __future__ import annotations

from pathlib import Path

from fastapi.testclient import TestClient

from cloud.app import create_app
from cloud.core.settings import Settings
from tests.cloud.coda.factories import axis_query, create_pool, filled_pool, samples
from tests.factories import ADMIN, device_headers, register_device


def _delete(client: TestClient, name: str = "movies", headers: dict[str, str] = ADMIN) -> int:
    return client.delete(f"/v1/coda/pools/{name}", headers=headers).status_code


def _pool_folders(settings: Settings) -> list[str]:
    root = settings.coda_dir
    return sorted(p.name for p in root.iterdir()) if root.is_dir() else []


def _replica(settings: Settings, folder: Path) -> TestClient:
    """Another app on the same database, with its own data directory."""
    other = settings.model_copy(update={"data_dir": folder})
    return TestClient(create_app(other), raise_server_exceptions=False)


def test_delete_removes_the_pool_and_its_samples(client: TestClient) -> None:
    """After a 204 the pool is not found, not listed, and devices cannot retrieve from it."""
    filled_pool(client, n=12)
    device = device_headers(register_device(client))
    assert _delete(client) == 204
    response = client.get("/v1/coda/pools/movies", headers=ADMIN)
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "pool_not_found"
    assert client.get("/v1/coda/pools", headers=ADMIN).json()["items"] == []
    body = {"pool": "movies", "queries": [axis_query(0)], "k": 3}
    retrieved = client.post("/v1/coda/retrieve", headers=device, json=body)
    assert retrieved.status_code == 404


def test_delete_removes_the_snapshot_files(client: TestClient, settings: Settings) -> None:
    """The pool's persisted snapshots are removed from the data directory; others stay."""
    filled_pool(client, n=8)
    filled_pool(client, n=8, name="books")
    assert len(_pool_folders(settings)) == 2
    assert _delete(client) == 204
    assert [name.split("-", 1)[1] for name in _pool_folders(settings)] == ["books"]


def test_delete_an_unknown_pool_is_not_found(client: TestClient) -> None:
    """Deleting a pool that does not exist gets a 404 pool_not_found."""
    response = client.delete("/v1/coda/pools/missing", headers=ADMIN)
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "pool_not_found"


def test_delete_needs_an_admin(client: TestClient) -> None:
    """A device token gets 403 and no credentials 401; the pool stays."""
    filled_pool(client, n=4)
    assert _delete(client, headers=device_headers(register_device(client))) == 403
    assert client.delete("/v1/coda/pools/movies").status_code == 401
    assert client.get("/v1/coda/pools/movies", headers=ADMIN).json()["samples"] == 4


def test_a_deleted_name_starts_afresh(client: TestClient) -> None:
    """A pool created under a deleted pool's name holds only its own samples and snapshot."""
    filled_pool(client, n=20)
    assert _delete(client) == 204
    create_pool(client)
    ingested = client.post(
        "/v1/coda/pools/movies/samples", headers=ADMIN, json={"samples": samples(3, seed=5)}
    )
    assert ingested.status_code == 201
    pool = client.post("/v1/coda/pools/movies/snapshot", headers=ADMIN).json()
    assert pool["samples"] == 3 and pool["snapshot"]["samples"] == 3


def test_another_replica_drops_the_pool_at_its_next_build(
    settings: Settings, tmp_path: Path
) -> None:
    """A replica that served the pool drops its snapshot and files when it next refreshes."""
    with TestClient(create_app(settings), raise_server_exceptions=False) as first:
        filled_pool(first, n=6)
        with _replica(settings, tmp_path / "replica") as second:
            assert second.post("/v1/coda/pools/movies/snapshot", headers=ADMIN).status_code == 200
            replica_dir = tmp_path / "replica" / "coda"
            builder = second.app.state.coda.builder  # type: ignore[attr-defined]
            assert builder.current(1) is not None and any(replica_dir.iterdir())
            assert _delete(first) == 204
            builder.refresh()
            assert builder.current(1) is None and list(replica_dir.iterdir()) == []


def test_folders_of_pools_deleted_while_down_are_removed_at_start(
    settings: Settings, tmp_path: Path
) -> None:
    """A replica that was stopped when the pool was deleted removes its folder on start."""
    with TestClient(create_app(settings), raise_server_exceptions=False) as first:
        filled_pool(first, n=6)
    assert len(_pool_folders(settings)) == 1
    with _replica(settings, tmp_path / "replica") as second:
        assert _delete(second) == 204
    with TestClient(create_app(settings), raise_server_exceptions=False):
        assert _pool_folders(settings) == []
