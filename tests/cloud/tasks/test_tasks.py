"""Publishing tasks: signed immutable versions, refused bundles, reads, bundle downloads."""

from __future__ import annotations

import hashlib
import tarfile
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from cloud.app import create_app
from cloud.core.errors import TaskVersionExists
from cloud.core.settings import Settings
from cloud.tasks import service
from device_sdk.bundle import verify_signature
from device_sdk.wire import TaskManifest
from tests.factories import ADMIN, device_headers, register_device, upload_model
from tests.task_factories import hostile_bundle, packed, regular, tar_gz


def publish(client: TestClient, data: bytes, headers: dict[str, str] | None = None) -> Any:
    return client.post(
        "/v1/tasks",
        headers=ADMIN if headers is None else headers,
        files={"bundle": ("task.tar.gz", data, "application/gzip")},
    )


def stored_blobs(settings: Settings) -> list[Path]:
    return [p for p in (settings.blob_dir / "sha256").rglob("*") if p.is_file()]


def test_publish_answers_201_with_the_version(client: TestClient, tmp_path: Path) -> None:
    """A valid bundle becomes the version its manifest names, with digest, size and URL."""
    data = packed(tmp_path, name="hello", version=3, description="echo")
    response = publish(client, data)
    assert response.status_code == 201, response.text
    body = response.json()
    digest = hashlib.sha256(data).hexdigest()
    assert (body["name"], body["version"]) == ("hello", 3)
    assert (body["bundle_sha256"], body["bundle_size"]) == (digest, len(data))
    assert body["bundle_url"] == f"/v1/bundles/{digest}"
    assert body["manifest"]["description"] == "echo"
    assert set(body["manifest"]["files"]) == {"main.py"}


def test_signature_verifies_with_the_key_devices_pin(client: TestClient, tmp_path: Path) -> None:
    """The published signature verifies against `platform_public_key` from registration."""
    body = publish(client, packed(tmp_path)).json()
    pinned = register_device(client)["platform_public_key"]
    verify_signature(TaskManifest.model_validate(body["manifest"]), body["signature"], pinned)


def test_signing_key_persists_across_restarts(settings: Settings, tmp_path: Path) -> None:
    """A restarted app signs with the same key: devices registered before still verify."""
    with TestClient(create_app(settings)) as first:
        before = register_device(first)["platform_public_key"]
        body = publish(first, packed(tmp_path)).json()
    with TestClient(create_app(settings)) as second:
        after = register_device(second)["platform_public_key"]
        version = second.get("/v1/tasks/hello/versions/1", headers=ADMIN).json()
    assert after == before
    verify_signature(TaskManifest.model_validate(version["manifest"]), body["signature"], after)


def test_published_versions_are_immutable(client: TestClient, tmp_path: Path) -> None:
    """Another bundle under a published (name, version) gets 409 and changes nothing."""
    first = publish(client, packed(tmp_path)).json()
    again = publish(client, packed(tmp_path, files={"main.py": "changed = True\n"}))
    assert again.status_code == 409
    error = again.json()["error"]
    assert error["code"] == "task_version_exists"
    assert "versions are immutable; raise `version` in manifest.json" in error["message"]
    versions = client.get("/v1/tasks/hello", headers=ADMIN).json()["versions"]
    assert [v["bundle_sha256"] for v in versions] == [first["bundle_sha256"]]


def test_the_same_bundle_twice_conflicts(client: TestClient, tmp_path: Path) -> None:
    """Publishing the identical bundle again is also 409 `task_version_exists`."""
    data = packed(tmp_path)
    publish(client, data)
    assert publish(client, data).json()["error"]["code"] == "task_version_exists"


def test_a_concurrent_duplicate_conflicts_without_a_trace(
    client: TestClient, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A duplicate that passes the existence check (a race) gets the same 409 from the
    unique constraint, and its bundle is not downloadable."""
    publish(client, packed(tmp_path))
    check = service._refuse_published
    calls: list[str] = []

    def lose_the_race(*args: Any) -> None:
        calls.append("check")
        if len(calls) > 1:  # the re-check after the IntegrityError
            check(*args)

    monkeypatch.setattr(service, "_refuse_published", lose_the_race)
    late = packed(tmp_path, files={"main.py": "late = True\n"})
    context = client.app.state.context  # type: ignore[attr-defined]
    with pytest.raises(TaskVersionExists):
        service.publish_task(
            context.db, context.blobs, context.platform_key, data=late, max_unpacked_bytes=1 << 20
        )
    monkeypatch.undo()
    assert len(client.get("/v1/tasks/hello", headers=ADMIN).json()["versions"]) == 1
    sha = hashlib.sha256(late).hexdigest()
    assert client.get(f"/v1/bundles/{sha}", headers=ADMIN).status_code == 404


def test_invalid_bundles_are_422_and_write_nothing(
    client: TestClient, settings: Settings, tmp_path: Path
) -> None:
    """Garbage, unlisted or altered files and bad manifests get 422 `invalid_bundle`."""
    valid = packed(tmp_path)
    cases = [
        b"not a bundle",
        b"",
        valid[: len(valid) // 2],
        valid[:-4],  # only the gzip trailer missing
        hostile_bundle(regular("../escape.py", b"x"), listed={}),
        hostile_bundle(regular("main.py", b"evil"), listed={"main.py": b"good"}),
        tar_gz(regular("manifest.json", b'{"name": "Bad Name", "version": 1}')),
    ]
    for data in cases:
        response = publish(client, data)
        assert response.status_code == 422, data[:20]
        assert response.json()["error"]["code"] == "invalid_bundle"
    assert client.get("/v1/tasks", headers=ADMIN).json()["items"] == []
    assert stored_blobs(settings) == []


def test_invalid_bundle_message_says_what_is_wrong(client: TestClient) -> None:
    """The 422 carries the bundle reader's message, naming the offending file."""
    response = publish(client, hostile_bundle(regular("extra.py", b"x"), listed={}))
    assert "extra.py" in response.json()["error"]["message"]


def test_missing_bundle_field_is_422(client: TestClient) -> None:
    """A publish without the `bundle` form field gets 422 naming the field."""
    response = client.post("/v1/tasks", headers=ADMIN, data={"name": "hello"})
    assert response.status_code == 422
    assert "bundle" in response.json()["error"]["message"]


def test_oversize_upload_is_413(client: TestClient) -> None:
    """A bundle over TANDEM_MAX_UPLOAD_BYTES gets 413 and no version exists."""
    response = publish(client, b"\0" * (3 * 1024 * 1024))
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "payload_too_large"
    assert client.get("/v1/tasks", headers=ADMIN).json()["items"] == []


def test_bundle_inflating_past_the_limit_is_422(client: TestClient, settings: Settings) -> None:
    """A small upload whose files inflate past 4x the upload limit is refused as a bomb."""
    zeros = b"\0" * (4 * settings.max_upload_bytes + 1)
    response = publish(client, hostile_bundle(regular("big.bin", zeros), listed={"big.bin": zeros}))
    assert response.status_code == 422
    assert "unpacks to more than" in response.json()["error"]["message"]


def test_bundle_with_a_huge_tar_header_is_422(client: TestClient, settings: Settings) -> None:
    """A pax header that inflates past the limit is refused before tarfile loads it."""
    info = tarfile.TarInfo("manifest.json")
    info.pax_headers = {"comment": "x" * (4 * settings.max_upload_bytes + 1)}
    response = publish(client, tar_gz((info, b"")))
    assert response.status_code == 422
    assert "unpacks to more than" in response.json()["error"]["message"]


def test_list_shows_each_task_with_its_latest_version(client: TestClient, tmp_path: Path) -> None:
    """GET /v1/tasks lists each name once with its latest version and version count."""
    for name, version in (("hello", 1), ("hello", 2), ("rerank", 5)):
        assert publish(client, packed(tmp_path, name=name, version=version)).status_code == 201
    items = client.get("/v1/tasks", headers=ADMIN).json()["items"]
    assert [(t["name"], t["latest_version"], t["versions"]) for t in items] == [
        ("hello", 2, 2),
        ("rerank", 5, 1),
    ]


def test_versions_are_listed_in_version_order(client: TestClient, tmp_path: Path) -> None:
    """GET /v1/tasks/{name} lists versions by number, whatever the publish order."""
    for version in (2, 1, 10):
        publish(client, packed(tmp_path, version=version))
    body = client.get("/v1/tasks/hello", headers=ADMIN).json()
    assert body["name"] == "hello"
    assert [v["version"] for v in body["versions"]] == [1, 2, 10]


def test_read_one_version(client: TestClient, tmp_path: Path) -> None:
    """GET /v1/tasks/{name}/versions/{version} returns what publishing returned."""
    published = publish(client, packed(tmp_path, version=4)).json()
    assert client.get("/v1/tasks/hello/versions/4", headers=ADMIN).json() == published


def test_unknown_task_is_404_saying_how_to_publish(client: TestClient) -> None:
    """A task name nothing was published under gets 404 `task_not_found`."""
    for path in ("/v1/tasks/nope", "/v1/tasks/nope/versions/1"):
        error = client.get(path, headers=ADMIN).json()["error"]
        assert error["code"] == "task_not_found"
        assert "tandem task publish" in error["message"]


def test_unknown_version_is_404_listing_published_ones(client: TestClient, tmp_path: Path) -> None:
    """A missing version gets 404 `task_version_not_found` naming the versions that exist."""
    publish(client, packed(tmp_path, version=1))
    publish(client, packed(tmp_path, version=2))
    response = client.get("/v1/tasks/hello/versions/3", headers=ADMIN)
    assert response.status_code == 404
    error = response.json()["error"]
    assert error["code"] == "task_version_not_found"
    assert error["message"] == "Task 'hello' has no version 3; published versions are 1, 2."


def test_device_downloads_and_resumes_a_bundle(client: TestClient, tmp_path: Path) -> None:
    """A device gets the exact bundle bytes as gzip, and can resume from an offset."""
    data = packed(tmp_path, files={"main.py": "x = 1\n" * 2000})
    url = publish(client, data).json()["bundle_url"]
    device = device_headers(register_device(client))
    deployed = client.post("/v1/deployments", headers=ADMIN, json={"task": "hello", "version": 1})
    assert deployed.status_code == 201
    whole = client.get(url, headers=device)
    assert whole.status_code == 200 and whole.content == data
    assert whole.headers["content-type"] == "application/gzip"
    assert "immutable" in whole.headers["cache-control"]
    cut = len(data) // 3
    rest = client.get(url, headers={**device, "Range": f"bytes={cut}-"})
    assert rest.status_code == 206
    assert data[:cut] + rest.content == data


def test_device_gets_404_for_a_bundle_not_deployed_to_it(
    client: TestClient, tmp_path: Path
) -> None:
    """A device cannot fetch a published bundle that its desired state does not name."""
    url = publish(client, packed(tmp_path)).json()["bundle_url"]
    client.post(
        "/v1/deployments",
        headers=ADMIN,
        json={"task": "hello", "version": 1, "target": {"tag": "beta"}},
    )
    outsider = device_headers(register_device(client))
    insider = device_headers(register_device(client, tags=["beta"]))
    assert client.get(url, headers=outsider).status_code == 404
    assert client.get(url, headers=insider).status_code == 200
    assert client.get(url, headers=ADMIN).status_code == 200


def test_device_gets_404_for_a_cloud_models_blob(client: TestClient) -> None:
    """/v1/bundles does not serve a cloud model's blob to a device."""
    sha = upload_model(client, target="cloud").json()["sha256"]
    device = device_headers(register_device(client))
    response = client.get(f"/v1/bundles/{sha}", headers=device)
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "blob_not_found"


def test_bundles_serve_only_published_bundles(client: TestClient) -> None:
    """/v1/bundles answers 404 even to an admin for a blob that is not a task bundle."""
    sha = upload_model(client, target="device").json()["sha256"]
    assert client.get(f"/v1/bundles/{sha}", headers=ADMIN).status_code == 404
    assert client.get(f"/v1/bundles/{'a' * 64}", headers=ADMIN).status_code == 404


def test_malformed_bundle_digest_is_400(client: TestClient) -> None:
    """A bundle digest that is not 64 lowercase hex characters gets 400 `invalid_digest`."""
    response = client.get(f"/v1/bundles/{'A' * 64}", headers=ADMIN)
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_digest"


def test_bundle_download_needs_credentials(client: TestClient, tmp_path: Path) -> None:
    """An anonymous bundle download gets 401."""
    url = publish(client, packed(tmp_path)).json()["bundle_url"]
    assert client.get(url).status_code == 401


def test_admin_endpoints_refuse_device_tokens(client: TestClient, tmp_path: Path) -> None:
    """Publishing and reading tasks need an admin key: a device token gets 403."""
    publish(client, packed(tmp_path))
    device = device_headers(register_device(client))
    assert publish(client, packed(tmp_path, version=2), headers=device).status_code == 403
    for path in ("/v1/tasks", "/v1/tasks/hello", "/v1/tasks/hello/versions/1"):
        assert client.get(path, headers=device).status_code == 403, path
    assert len(client.get("/v1/tasks/hello", headers=ADMIN).json()["versions"]) == 1


def test_publish_announces_the_version(
    client: TestClient, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A publish puts a `task.published` event on the broker with name, version and digest."""
    context = client.app.state.context  # type: ignore[attr-defined]
    published: list[bytes] = []
    real = context.broker.publish

    async def record(channel: str, message: bytes) -> None:
        published.append(message)
        await real(channel, message)

    monkeypatch.setattr(context.broker, "publish", record)
    body = publish(client, packed(tmp_path)).json()
    events = [m for m in published if b'"task.published"' in m]
    assert len(events) == 1
    assert b'"name": "hello"' in events[0] and body["bundle_sha256"].encode() in events[0]
