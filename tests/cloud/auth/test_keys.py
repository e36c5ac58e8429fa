"""Admin keys and enrollment keys: creation, hashing at rest, revocation, limits."""

from __future__ import annotations

from pathlib import Path

from fastapi.testclient import TestClient
from sqlalchemy import create_engine, text

from cloud.app import create_app
from cloud.auth.service import create_admin_key, revoke_admin_key
from cloud.core.db import Database, make_engine
from cloud.core.secrets import hash_token
from cloud.core.settings import Settings
from tests.factories import ADMIN, ADMIN_TOKEN, changed, enrollment_key, register_device


def _database(settings: Settings) -> Database:
    return Database(make_engine(settings.resolved_database_url))


def test_secrets_are_stored_only_as_hashes(client: TestClient, settings: Settings) -> None:
    """No admin key, enrollment key or device token appears in the database, only its sha256."""
    key = enrollment_key(client)
    device = register_device(client, key)
    engine = create_engine(settings.resolved_database_url)
    with engine.connect() as connection:
        dump = " ".join(
            str(row)
            for table in ("admin_keys", "enrollment_keys", "devices")
            for row in connection.execute(text(f"SELECT * FROM {table}"))  # noqa: S608  # fixed table names
        )
    engine.dispose()
    for secret in (ADMIN_TOKEN, key, device["token"]):
        assert secret not in dump
        assert hash_token(secret) in dump


def test_tokens_carry_256_random_bits(client: TestClient) -> None:
    """Issued tokens have a kind prefix and 43 url-safe characters (256 bits) after it."""
    key = enrollment_key(client)
    token = register_device(client, key)["token"]
    assert key.startswith("tdm_enroll_") and len(key.removeprefix("tdm_enroll_")) == 43
    assert token.startswith("tdm_device_") and len(token.removeprefix("tdm_device_")) == 43


def test_created_admin_key_works_and_revocation_stops_it(
    client: TestClient, settings: Settings
) -> None:
    """A key from create_admin_key authenticates until it is revoked, then gets 401."""
    database = _database(settings)
    with database.session() as session:
        token = create_admin_key(session, "ops")
    assert (
        client.get("/v1/devices", headers={"Authorization": f"Bearer {token}"}).status_code == 200
    )
    with database.session() as session:
        revoke_admin_key(session, "ops")
    database.dispose()
    assert (
        client.get("/v1/devices", headers={"Authorization": f"Bearer {token}"}).status_code == 401
    )


def test_changing_bootstrap_token_retires_the_old_one(settings: Settings, tmp_path: Path) -> None:
    """When TANDEM_ADMIN_TOKEN changes between starts, only the new value authenticates."""
    with TestClient(create_app(settings)):
        pass
    rotated = changed(settings, admin_token="another-admin-token-0123456789")
    with TestClient(create_app(rotated)) as client:
        assert client.get("/v1/devices", headers=ADMIN).status_code == 401
        fresh = {"Authorization": "Bearer another-admin-token-0123456789"}
        assert client.get("/v1/devices", headers=fresh).status_code == 200


def test_unsetting_bootstrap_token_revokes_it(settings: Settings) -> None:
    """Starting without TANDEM_ADMIN_TOKEN revokes the bootstrap key it had before."""
    with TestClient(create_app(settings)):
        pass
    with TestClient(create_app(changed(settings, admin_token=None))) as client:
        assert client.get("/v1/devices", headers=ADMIN).status_code == 401


def test_wrong_enrollment_key_is_refused(client: TestClient) -> None:
    """Registering with an unissued key gets 401 `invalid_enrollment_key` and creates nothing."""
    response = client.post(
        "/v1/devices", json={"enrollment_key": "tdm_enroll_nope", "attributes": {}}
    )
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "invalid_enrollment_key"
    assert client.get("/v1/devices", headers=ADMIN).json()["items"] == []


def test_revoked_enrollment_key_is_refused(client: TestClient) -> None:
    """A revoked enrollment key gets 403 `enrollment_key_revoked`."""
    created = client.post("/v1/enrollment-keys", headers=ADMIN, json={"name": "beta"}).json()
    assert client.delete(f"/v1/enrollment-keys/{created['id']}", headers=ADMIN).status_code == 200
    response = client.post("/v1/devices", json={"enrollment_key": created["key"]})
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "enrollment_key_revoked"


def test_enrollment_key_device_limit_is_enforced(client: TestClient) -> None:
    """A key with max_devices=2 enrolls two devices and refuses the third with 403."""
    key = enrollment_key(client, max_devices=2)
    register_device(client, key)
    register_device(client, key)
    third = client.post("/v1/devices", json={"enrollment_key": key})
    assert third.status_code == 403
    assert "maximum of 2" in third.json()["error"]["message"]


def test_duplicate_enrollment_key_name_conflicts(client: TestClient) -> None:
    """Creating two enrollment keys with one name gets 409 `duplicate_name` the second time."""
    assert (
        client.post("/v1/enrollment-keys", headers=ADMIN, json={"name": "fleet"}).status_code == 201
    )
    again = client.post("/v1/enrollment-keys", headers=ADMIN, json={"name": "fleet"})
    assert again.status_code == 409
    assert again.json()["error"]["code"] == "duplicate_name"
    listed = client.get("/v1/enrollment-keys", headers=ADMIN).json()["items"]
    assert [k["name"] for k in listed] == ["fleet"]
    assert "key" not in listed[0]


def test_revoking_unknown_enrollment_key_is_404(client: TestClient) -> None:
    """Revoking an enrollment key id that does not exist gets 404 naming the id."""
    response = client.delete("/v1/enrollment-keys/999", headers=ADMIN)
    assert response.status_code == 404
    assert "999" in response.json()["error"]["message"]
