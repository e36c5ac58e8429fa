"""The device fast path answers exactly as the full application does."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from httpx import Response

from cloud.app import create_app
from cloud.core.settings import Settings
from cloud.deploy.fast_path import BundleCache
from tests.cloud.deploy.deploy_factories import deploy, publish
from tests.factories import ADMIN, changed, device_headers, register_device

COMPARED_HEADERS = ("etag", "cache-control", "content-type", "content-length", "accept-ranges")


@pytest.fixture
def apps(settings: Settings) -> Iterator[tuple[TestClient, TestClient]]:
    """Two replicas on one database: one with the fast path, one without."""
    slow_settings = changed(settings, device_fast_path=False)
    with (
        TestClient(create_app(settings), raise_server_exceptions=False) as fast,
        TestClient(create_app(slow_settings), raise_server_exceptions=False) as slow,
    ):
        yield fast, slow


def answered_fast(client: TestClient, route: str) -> float:
    text = client.get("/metrics", headers=ADMIN).text
    match = re.search(
        rf'^tandem_fast_path_requests_total\{{route="{re.escape(route)}"\}} (\S+)$', text, re.M
    )
    return float(match.group(1)) if match else 0.0


def same(fast: Response, slow: Response) -> None:
    assert fast.status_code == slow.status_code
    assert fast.content == slow.content
    for name in COMPARED_HEADERS:
        assert fast.headers.get(name) == slow.headers.get(name), name


def released(apps: tuple[TestClient, TestClient], tmp_path: Path) -> tuple[dict[str, Any], Any]:
    """A device with a task released to it that has read its desired state twice from the
    fast replica: the first read caches its token, the second goes the fast path."""
    fast, _slow = apps
    device = register_device(fast)
    task = publish(fast, tmp_path)
    deploy(fast)
    for _ in range(2):
        warm = fast.get("/v1/devices/me/desired", headers=device_headers(device))
        assert warm.status_code == 200
    return device, task


def test_desired_state_is_the_same_through_the_fast_path(
    apps: tuple[TestClient, TestClient], tmp_path: Path
) -> None:
    """A cached device's desired state, and its 304, match the full path's byte for byte."""
    fast, slow = apps
    device, _task = released(apps, tmp_path)
    before = answered_fast(fast, "/v1/devices/me/desired")
    headers = device_headers(device)
    full = slow.get("/v1/devices/me/desired", headers=headers)
    same(fast.get("/v1/devices/me/desired", headers=headers), full)
    etag = {**headers, "If-None-Match": full.headers["etag"]}
    same(
        fast.get("/v1/devices/me/desired", headers=etag),
        slow.get("/v1/devices/me/desired", headers=etag),
    )
    assert answered_fast(fast, "/v1/devices/me/desired") == before + 2
    assert before == 1


def test_bundle_download_is_the_same_through_the_fast_path(
    apps: tuple[TestClient, TestClient], tmp_path: Path
) -> None:
    """A bundle named by the device's desired state downloads as from the full path."""
    fast, slow = apps
    device, task = released(apps, tmp_path)
    url = f"/v1/bundles/{task['bundle_sha256']}"
    response = fast.get(url, headers=device_headers(device))
    same(response, slow.get(url, headers=device_headers(device)))
    assert response.status_code == 200
    assert answered_fast(fast, "/v1/bundles/{sha256}") == 1


def test_bundle_ranges_and_foreign_digests_take_the_full_path(
    apps: tuple[TestClient, TestClient], tmp_path: Path
) -> None:
    """A Range request gets its 206 and a bundle outside the desired state its 404, as
    the full path answers them."""
    fast, slow = apps
    device, task = released(apps, tmp_path)
    ranged = {**device_headers(device), "Range": "bytes=0-9"}
    url = f"/v1/bundles/{task['bundle_sha256']}"
    same(fast.get(url, headers=ranged), slow.get(url, headers=ranged))
    assert fast.get(url, headers=ranged).status_code == 206
    other = "/v1/bundles/" + "ab" * 32
    same(
        fast.get(other, headers=device_headers(device)),
        slow.get(other, headers=device_headers(device)),
    )
    assert answered_fast(fast, "/v1/bundles/{sha256}") == 0


def test_status_reports_are_stored_through_the_fast_path(
    apps: tuple[TestClient, TestClient], tmp_path: Path
) -> None:
    """A valid report is acknowledged as by the full path and counts in the deployment."""
    fast, slow = apps
    device = register_device(fast)
    publish(fast, tmp_path)
    created = deploy(fast)
    for _ in range(2):  # caches the token
        fast.get("/v1/devices/me/desired", headers=device_headers(device))
    body = {"reports": [{"task": "hello", "version": 1, "state": "active"}]}
    headers = device_headers(device)
    same(
        fast.post("/v1/devices/me/status", headers=headers, json=body),
        slow.post("/v1/devices/me/status", headers=headers, json=body),
    )
    assert answered_fast(fast, "/v1/devices/me/status") == 1
    (stage,) = fast.get(f"/v1/deployments/{created['id']}", headers=ADMIN).json()["progress"]
    assert (stage["targeted"], stage["active"]) == (1, 1)


@pytest.mark.parametrize(
    "body",
    [
        b"{not json",
        b'{"reports": "many"}',
        b'{"reports": [{"task": "hello", "version": 1, "state": "exploded"}]}',
        b'{"reports": [{"task": "hello", "version": 99, "state": "active"}]}',
    ],
)
def test_bad_status_reports_get_the_full_paths_answer(
    apps: tuple[TestClient, TestClient], tmp_path: Path, body: bytes
) -> None:
    """Invalid or refused reports get the same 4xx, code and message as without the fast
    path, and store nothing."""
    fast, slow = apps
    device, _task = released(apps, tmp_path)
    headers = {**device_headers(device), "Content-Type": "application/json"}
    answer = fast.post("/v1/devices/me/status", headers=headers, content=body)
    assert 400 <= answer.status_code < 500
    same(answer, slow.post("/v1/devices/me/status", headers=headers, content=body))


def test_unknown_and_malformed_tokens_get_401(apps: tuple[TestClient, TestClient]) -> None:
    """Tokens the cache does not hold are judged by the full path: 401 with its code."""
    fast, slow = apps
    for authorization in ("Bearer dev_" + "x" * 40, "Basic abc", "Bearer " + "y" * 600):
        headers = {"Authorization": authorization}
        same(
            fast.get("/v1/devices/me/desired", headers=headers),
            slow.get("/v1/devices/me/desired", headers=headers),
        )
        assert fast.get("/v1/devices/me/desired", headers=headers).status_code == 401


def test_removed_device_is_refused_at_once(
    apps: tuple[TestClient, TestClient], tmp_path: Path
) -> None:
    """Removing a device evicts its cached token: its next call is 401, not a fast answer."""
    fast, _slow = apps
    device, _task = released(apps, tmp_path)
    assert fast.delete(f"/v1/devices/{device['device_id']}", headers=ADMIN).status_code == 204
    answer = fast.get("/v1/devices/me/desired", headers=device_headers(device))
    assert answer.status_code == 401


def test_desired_state_read_inline_sees_each_new_release(
    apps: tuple[TestClient, TestClient], tmp_path: Path
) -> None:
    """The fast path's own database connection reads every commit made after it opened."""
    fast, _slow = apps
    device, _task = released(apps, tmp_path)
    headers = device_headers(device)
    first = fast.get("/v1/devices/me/desired", headers=headers).json()
    publish(fast, tmp_path, version=2)
    deploy(fast, version=2)
    second = fast.get("/v1/devices/me/desired", headers=headers).json()
    assert second["rev"] > first["rev"]
    assert [t["version"] for t in second["tasks"]] == [2]


def test_bundle_cache_evicts_the_least_recently_used_past_its_size() -> None:
    """The in-memory bundle cache keeps at most its byte budget, dropping the oldest use."""
    cache = BundleCache(max_bytes=10)
    cache.put("a", b"1234")
    cache.put("b", b"5678")
    assert cache.get("a") == b"1234"  # "a" is now the most recently used
    cache.put("c", b"90ab")
    assert cache.get("b") is None
    assert cache.get("a") == b"1234"
    assert cache.get("c") == b"90ab"
    assert cache.size == 8
    cache.put("huge", b"x" * 11)
    assert cache.get("huge") is None


def test_damaged_bundle_blob_is_not_served_by_the_fast_path(
    apps: tuple[TestClient, TestClient], tmp_path: Path, settings: Settings
) -> None:
    """A blob whose bytes no longer match its digest goes to the full path, never cached."""
    fast, _slow = apps
    device, task = released(apps, tmp_path)
    blobs = list(settings.data_dir.rglob(task["bundle_sha256"]))
    assert blobs, "the bundle's blob file"
    blobs[0].write_bytes(b"tampered")
    fast.get(f"/v1/bundles/{task['bundle_sha256']}", headers=device_headers(device))
    assert answered_fast(fast, "/v1/bundles/{sha256}") == 0
