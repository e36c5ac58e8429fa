"""Device registration, attributes, listing with filters and cursor pagination."""

from __future__ import annotations

from datetime import timedelta

from fastapi.testclient import TestClient
from sqlalchemy import update

from cloud.core.db import Database, make_engine, utcnow
from cloud.core.settings import Settings
from cloud.devices.tables import DeviceRow
from tests.factories import ADMIN, device_headers, enrollment_key, register_device


def test_registration_returns_identity_and_attributes(client: TestClient) -> None:
    """POST /v1/devices answers 201 with the device id, a token and the stored attributes."""
    device = register_device(
        client,
        platform="android",
        os_version="14",
        app_version="5.2.0",
        model="Pixel 8",
        region="eu-west",
        tags=["beta", "alpha", "beta"],
    )
    assert device["device_id"] and device["token"]
    assert device["attributes"] == {
        "platform": "android",
        "os_version": "14",
        "app_version": "5.2.0",
        "model": "Pixel 8",
        "region": "eu-west",
        "tags": ["alpha", "beta"],
    }


def test_device_updates_its_attributes(client: TestClient) -> None:
    """PUT /v1/devices/me/attributes replaces the attributes, e.g. after an app update."""
    device = register_device(client, platform="android", app_version="5.2.0", tags=["beta"])
    response = client.put(
        "/v1/devices/me/attributes",
        headers=device_headers(device),
        json={"platform": "android", "app_version": "5.3.0"},
    )
    assert response.status_code == 200
    assert response.json()["attributes"]["app_version"] == "5.3.0"
    assert response.json()["attributes"]["tags"] == []


def test_list_filters_by_attributes_and_tags(client: TestClient) -> None:
    """Filters combine: platform, region and every given tag must all match."""
    key = enrollment_key(client)
    keep = register_device(client, key, platform="ios", region="eu", tags=["beta", "qa"])
    register_device(client, key, platform="ios", region="eu", tags=["beta"])
    register_device(client, key, platform="android", region="eu", tags=["beta", "qa"])
    response = client.get(
        "/v1/devices",
        headers=ADMIN,
        params={"platform": "ios", "region": "eu", "tag": ["beta", "qa"]},
    )
    assert [d["device_id"] for d in response.json()["items"]] == [keep["device_id"]]


def test_cursor_pagination_visits_every_device_once(client: TestClient) -> None:
    """Following next_cursor with limit=2 lists 5 devices in order, each once, then stops."""
    key = enrollment_key(client)
    ids = [register_device(client, key)["device_id"] for _ in range(5)]
    seen: list[str] = []
    cursor = None
    for _ in range(10):
        params: dict[str, str | int] = {"limit": 2}
        if cursor:
            params["cursor"] = cursor
        page = client.get("/v1/devices", headers=ADMIN, params=params).json()
        seen += [d["device_id"] for d in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == ids


def test_forged_cursor_is_400(client: TestClient) -> None:
    """A cursor the server did not issue gets 400 `invalid_cursor`, not a 500."""
    for cursor in ("not-base64!!", "eyJhZnRlciI6ICJ4In0", "e30", "W10", "eyJhZnRlciI6IC0xfQ"):
        response = client.get("/v1/devices", headers=ADMIN, params={"cursor": cursor})
        assert response.status_code == 400, cursor
        assert response.json()["error"]["code"] == "invalid_cursor"


def test_bad_list_parameters_are_422(client: TestClient) -> None:
    """limit outside 1..500 and over-long filters get 422 naming the parameter."""
    for params in ({"limit": 0}, {"limit": 501}, {"limit": "many"}, {"platform": "x" * 100}):
        response = client.get("/v1/devices", headers=ADMIN, params=params)
        assert response.status_code == 422, params
        assert response.json()["error"]["code"] == "validation_error"


def test_unknown_device_is_404(client: TestClient) -> None:
    """Reading a device id that does not exist gets 404 `device_not_found`."""
    response = client.get("/v1/devices/no-such-device", headers=ADMIN)
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "device_not_found"


def test_last_seen_advances_when_device_calls(client: TestClient, settings: Settings) -> None:
    """A device call after the resolution window moves last_seen forward."""
    device = register_device(client)
    database = Database(make_engine(settings.resolved_database_url))
    long_ago = utcnow() - timedelta(hours=2)
    with database.session() as session:
        session.execute(update(DeviceRow).values(last_seen=long_ago))
    database.dispose()
    me = client.get("/v1/devices/me", headers=device_headers(device)).json()
    seen = client.get(f"/v1/devices/{device['device_id']}", headers=ADMIN).json()["last_seen"]
    assert seen > long_ago.isoformat()
    assert me["device_id"] == device["device_id"]


def test_hostile_registration_bodies_are_refused_cleanly(client: TestClient) -> None:
    """Unknown fields, wrong types, oversize values and bad tags get 422; nothing is created."""
    key = enrollment_key(client)
    bodies = [
        {"enrollment_key": key, "attributes": {"platform": "x" * 33}},
        {"enrollment_key": key, "attributes": {"tags": ["has space"]}},
        {"enrollment_key": key, "attributes": {"tags": ["t"] * 33}},
        {"enrollment_key": key, "attributes": {"colour": "red"}},
        {"enrollment_key": key, "attributes": "android"},
        {"enrollment_key": key, "extra": 1},
        {"enrollment_key": 12345},
        {},
        [],
    ]
    for body in bodies:
        response = client.post("/v1/devices", json=body)
        assert response.status_code == 422, body
        assert response.json()["error"]["code"] == "validation_error"
    assert client.get("/v1/devices", headers=ADMIN).json()["items"] == []


def test_malformed_json_is_400(client: TestClient) -> None:
    """A body that is not JSON gets 400 `invalid_json` with a hint."""
    response = client.post(
        "/v1/devices", content=b"{not json", headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_json"
