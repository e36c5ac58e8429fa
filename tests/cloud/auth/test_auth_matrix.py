"""Who may call what: every protected endpoint against every kind of caller."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient

from tests.factories import ADMIN, device_headers, register_device, upload_model

ZERO_DIGEST = "0" * 64

# (method, path, keyword arguments for the request)
ADMIN_ENDPOINTS: list[tuple[str, str, dict[str, Any]]] = [
    ("POST", "/v1/enrollment-keys", {"json": {}}),
    ("GET", "/v1/enrollment-keys", {}),
    ("DELETE", "/v1/enrollment-keys/1", {}),
    ("GET", "/v1/devices", {}),
    ("GET", "/v1/devices/some-device", {}),
    ("DELETE", "/v1/devices/some-device", {}),
    (
        "POST",
        "/v1/models",
        {"data": {"name": "m", "target": "cloud"}, "files": {"file": ("m.onnx", b"x")}},
    ),
    ("GET", "/v1/models", {}),
    ("GET", "/v1/models/m", {}),
    ("GET", "/v1/models/m/versions/1", {}),
    ("GET", "/v1/events", {}),
]
DEVICE_ENDPOINTS: list[tuple[str, str, dict[str, Any]]] = [
    ("GET", "/v1/devices/me", {}),
    ("PUT", "/v1/devices/me/attributes", {"json": {"platform": "ios"}}),
]
EITHER_ENDPOINTS: list[tuple[str, str, dict[str, Any]]] = [
    ("GET", f"/v1/blobs/{ZERO_DIGEST}", {}),
]
ALL_PROTECTED = ADMIN_ENDPOINTS + DEVICE_ENDPOINTS + EITHER_ENDPOINTS


def _statuses(
    client: TestClient, endpoints: list[tuple[str, str, dict[str, Any]]], headers: dict[str, str]
) -> dict[str, tuple[int, str]]:
    seen = {}
    for method, path, kwargs in endpoints:
        response = client.request(method, path, headers=headers, **kwargs)
        seen[f"{method} {path}"] = (
            response.status_code,
            response.json()["error"]["code"] if response.status_code >= 400 else "",
        )
    return seen


def test_no_credentials_get_401_everywhere(client: TestClient) -> None:
    """Every protected endpoint answers 401 `unauthorized` when no Authorization header is sent."""
    seen = _statuses(client, ALL_PROTECTED, {})
    assert {k: v for k, v in seen.items() if v != (401, "unauthorized")} == {}


def test_unknown_token_gets_401_everywhere(client: TestClient) -> None:
    """A well-formed bearer token nobody issued gets 401 on every protected endpoint."""
    fake = {"Authorization": "Bearer tdm_admin_" + "A" * 43}
    seen = _statuses(client, ALL_PROTECTED, fake)
    assert {k: v for k, v in seen.items() if v[0] != 401} == {}


def test_malformed_authorization_header_gets_401(client: TestClient) -> None:
    """Basic auth, an empty bearer and an absurdly long token are all refused with 401."""
    for header in ("Basic dXNlcjpwYXNz", "Bearer ", "Bearer " + "x" * 5000, "Token abc"):
        response = client.get("/v1/devices", headers={"Authorization": header})
        assert response.status_code == 401, header
        assert response.headers["www-authenticate"].startswith("Bearer")


def test_device_token_gets_403_on_admin_endpoints(client: TestClient) -> None:
    """A valid device token is refused with 403 `forbidden` by every admin endpoint."""
    device = register_device(client)
    seen = _statuses(client, ADMIN_ENDPOINTS, device_headers(device))
    assert {k: v for k, v in seen.items() if v != (403, "forbidden")} == {}


def test_admin_key_gets_403_on_device_endpoints(client: TestClient) -> None:
    """An admin key is refused with 403 by endpoints that answer for the calling device."""
    seen = _statuses(client, DEVICE_ENDPOINTS, ADMIN)
    assert {k: v for k, v in seen.items() if v != (403, "forbidden")} == {}


def test_admin_key_passes_auth_on_admin_endpoints(client: TestClient) -> None:
    """The bootstrap admin key gets past authentication on every admin endpoint but the stream."""
    seen = _statuses(client, [e for e in ADMIN_ENDPOINTS if e[1] != "/v1/events"], ADMIN)
    assert {k: v for k, v in seen.items() if v[0] in (401, 403)} == {}


def test_device_sees_only_itself(client: TestClient) -> None:
    """/v1/devices/me returns the caller, and a device cannot read another device by id."""
    first = register_device(client, platform="android")
    second = register_device(client, platform="ios")
    me = client.get("/v1/devices/me", headers=device_headers(first)).json()
    assert me["device_id"] == first["device_id"]
    other = client.get(f"/v1/devices/{second['device_id']}", headers=device_headers(first))
    assert other.status_code == 403


def test_removed_device_token_stops_working(client: TestClient) -> None:
    """After an admin removes a device, its token gets 401."""
    device = register_device(client)
    assert client.delete(f"/v1/devices/{device['device_id']}", headers=ADMIN).status_code == 204
    assert client.get("/v1/devices/me", headers=device_headers(device)).status_code == 401


def test_device_cannot_download_cloud_model_blob(client: TestClient) -> None:
    """A device gets 404 for a cloud model's blob, while the admin downloads it."""
    digest = upload_model(client, target="cloud").json()["sha256"]
    device = register_device(client)
    assert client.get(f"/v1/blobs/{digest}", headers=device_headers(device)).status_code == 404
    assert client.get(f"/v1/blobs/{digest}", headers=ADMIN).status_code == 200


def test_device_downloads_device_model_blob(client: TestClient) -> None:
    """A device may download the blob of a model whose target is `device`."""
    digest = upload_model(client, name="edge", target="device").json()["sha256"]
    device = register_device(client)
    assert client.get(f"/v1/blobs/{digest}", headers=device_headers(device)).status_code == 200
