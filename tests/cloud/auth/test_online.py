"""Listening devices stay authenticated; removed ones are evicted even without the broker."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select, update

from cloud.auth.cache import AuthCache
from cloud.auth.online import OnlineDevices, refresh
from cloud.auth.principal import DevicePrincipal
from cloud.core.db import Database, make_engine, utcnow
from cloud.core.secrets import hash_token
from cloud.core.settings import Settings
from cloud.devices.tables import DeviceRow
from tests.factories import ADMIN, register_device


@pytest.fixture
def database(settings: Settings) -> Iterator[Database]:
    database = Database(make_engine(settings.resolved_database_url))
    yield database
    database.dispose()


def principal_of(device: dict[str, Any], seq: int) -> tuple[str, DevicePrincipal]:
    return hash_token(device["token"]), DevicePrincipal(seq=seq, device_id=device["device_id"])


def seq_of(database: Database, device_id: str) -> int:
    with database.session(write=False) as session:
        seq = session.scalar(select(DeviceRow.seq).where(DeviceRow.device_id == device_id))
    assert seq is not None
    return seq


def test_refresh_renews_listening_devices_and_evicts_removed_ones(
    client: TestClient, database: Database
) -> None:
    """A listening device's cache entry is renewed and its last_seen written; a device
    removed meanwhile loses its entry, though no eviction hint arrived."""
    kept, removed = register_device(client), register_device(client)
    long_ago = utcnow() - timedelta(hours=2)
    with database.session() as session:
        session.execute(update(DeviceRow).values(last_seen=long_ago))
    cache, online = AuthCache(ttl_s=60), OnlineDevices()
    for device in (kept, removed):
        token_hash, principal = principal_of(device, seq_of(database, device["device_id"]))
        online.opened(token_hash, principal)
    response = client.delete(f"/v1/devices/{removed['device_id']}", headers=ADMIN)
    assert response.status_code == 204
    cache.put(hash_token(removed["token"]), online.listening()[1][1])  # a stale entry

    asyncio.run(refresh(database, cache, online))

    assert cache.get(hash_token(kept["token"])) is not None
    assert cache.get(hash_token(removed["token"])) is None
    seen = client.get(f"/v1/devices/{kept['device_id']}", headers=ADMIN).json()["last_seen"]
    assert seen > long_ago.isoformat()


def test_a_device_stops_listening_when_its_last_stream_closes() -> None:
    """Two streams of one device count separately; closing both forgets it."""
    online = OnlineDevices()
    principal = DevicePrincipal(seq=7, device_id="d7")
    online.opened("h", principal)
    online.opened("h", principal)
    online.closed(7)
    assert len(online) == 1
    online.closed(7)
    assert len(online) == 0
    assert online.listening() == []
