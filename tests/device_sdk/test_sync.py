"""Reconcile passes: request budget, verification failures, retries, rollback, durable reports."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from device_sdk import (
    CloudClient,
    CloudUnavailable,
    DeviceStore,
    Installer,
    InvalidBundle,
    Reconciler,
    SyncAgent,
    VersionState,
)
from tests.device_sdk.fake_cloud import DEVICE_TOKEN, FakeCloud, make_task

DESIRED = "/v1/devices/me/desired"
STATUS = "/v1/devices/me/status"


@pytest.fixture
def cloud() -> FakeCloud:
    return FakeCloud()


@pytest.fixture
def store(tmp_path: Path) -> Iterator[DeviceStore]:
    opened = DeviceStore(tmp_path / "device.db")
    yield opened
    opened.close()


def client_for(cloud: FakeCloud) -> CloudClient:
    return CloudClient("http://cloud", token=DEVICE_TOKEN, transport=cloud.transport)


def reconciler_for(
    cloud: FakeCloud, store: DeviceStore, tmp_path: Path, failed_retry_s: float = 300.0
) -> Reconciler:
    return Reconciler(
        client_for(cloud),
        store,
        Installer(tmp_path, store),
        downloads_dir=tmp_path / "downloads",
        public_key=cloud.public_key,
        failed_retry_s=failed_retry_s,
    )


@pytest.fixture
def reconciler(cloud: FakeCloud, store: DeviceStore, tmp_path: Path) -> Reconciler:
    return reconciler_for(cloud, store, tmp_path)


def tamper(cloud: FakeCloud, sha256: str) -> None:
    """Change the last byte of a served bundle, keeping its size."""
    data = cloud.blobs[sha256]
    cloud.blobs[sha256] = data[:-1] + bytes([data[-1] ^ 0xFF])


def test_one_release_costs_desired_bundle_and_one_status_request(
    cloud: FakeCloud, reconciler: Reconciler, store: DeviceStore
) -> None:
    """Converging on one release sends exactly: GET desired, GET bundle, POST status."""
    task = cloud.release("hello", 1)
    reconciler.reconcile()
    assert cloud.paths() == [DESIRED, f"/v1/bundles/{task.bundle_sha256}", STATUS]
    assert cloud.reported() == [("hello", 1, "downloaded"), ("hello", 1, "active")]
    assert store.active_versions() == {"hello": 1}


def test_unchanged_desired_state_costs_one_conditional_request(
    cloud: FakeCloud, reconciler: Reconciler
) -> None:
    """A reconcile with nothing new sends one GET desired, answered 304."""
    cloud.release("hello", 1)
    reconciler.reconcile()
    cloud.requests.clear()
    reconciler.reconcile()
    assert cloud.paths() == [DESIRED]
    assert cloud.requests[0].headers["if-none-match"] == f'"{cloud.rev}"'


def test_tampered_bundle_is_reported_failed_and_previous_stays(
    cloud: FakeCloud, reconciler: Reconciler, store: DeviceStore
) -> None:
    """Version 2 with altered bytes is reported failed with a reason; version 1 stays active."""
    cloud.release("hello", 1)
    reconciler.reconcile()
    task = cloud.release("hello", 2)
    tamper(cloud, task.bundle_sha256)
    reconciler.reconcile()
    assert store.active_versions() == {"hello": 1}
    failed = cloud.reports[-1]
    assert (failed["version"], failed["state"]) == (2, "failed")
    assert "altered" in str(failed["reason"])
    assert not (store.path.parent / "downloads" / f"{task.bundle_sha256}.part").exists()


def test_bundle_signed_by_another_key_is_reported_failed(
    cloud: FakeCloud, reconciler: Reconciler, store: DeviceStore
) -> None:
    """A bundle whose manifest signature does not verify is reported failed."""
    cloud.release("hello", 1)
    reconciler.reconcile()
    cloud.deploy(*make_task("hello", 2, key=Ed25519PrivateKey.generate()))
    reconciler.reconcile()
    assert store.active_versions() == {"hello": 1}
    assert cloud.reported()[-1] == ("hello", 2, "failed")
    assert "signature" in str(cloud.reports[-1]["reason"])


def test_failed_version_is_not_retried_while_nothing_changes(
    cloud: FakeCloud, reconciler: Reconciler
) -> None:
    """After a failure, further reconciles of the same desired state download nothing."""
    tamper(cloud, cloud.release("hello", 1).bundle_sha256)
    reconciler.reconcile()
    cloud.requests.clear()
    for _ in range(3):
        reconciler.reconcile()
    assert cloud.paths() == [DESIRED] * 3


def test_failed_version_is_retried_when_the_desired_state_changes(
    cloud: FakeCloud, reconciler: Reconciler, store: DeviceStore
) -> None:
    """A new desired revision retries the failed version, which now succeeds."""
    task = cloud.release("hello", 1)
    good = cloud.blobs[task.bundle_sha256]
    tamper(cloud, task.bundle_sha256)
    reconciler.reconcile()
    cloud.blobs[task.bundle_sha256] = good
    cloud.release("other", 1)
    reconciler.reconcile()
    assert store.active_versions() == {"hello": 1, "other": 1}


def test_failed_version_is_retried_after_its_backoff(
    cloud: FakeCloud, store: DeviceStore, tmp_path: Path
) -> None:
    """Once the retry delay has passed, the same desired state retries the failed version."""
    reconciler = reconciler_for(cloud, store, tmp_path, failed_retry_s=0.0)
    task = cloud.release("hello", 1)
    tamper(cloud, task.bundle_sha256)
    reconciler.reconcile()
    cloud.requests.clear()
    reconciler.reconcile()
    assert f"/v1/bundles/{task.bundle_sha256}" in cloud.paths()


def test_failed_version_reports_when_its_retry_is_due(
    cloud: FakeCloud, reconciler: Reconciler
) -> None:
    """reconcile() returns the delay until the failed version's retry, at most the default."""
    tamper(cloud, cloud.release("hello", 1).bundle_sha256)
    outcome = reconciler.reconcile()
    assert isinstance(outcome.failure, InvalidBundle)
    assert outcome.retry_in_s is not None and 0 < outcome.retry_in_s <= 300.0


def test_rollback_reactivates_the_kept_version_without_a_download(
    cloud: FakeCloud, reconciler: Reconciler, store: DeviceStore
) -> None:
    """When the cloud asks for version 1 again, it is re-activated from disk."""
    first = cloud.release("hello", 1)
    reconciler.reconcile()
    cloud.release("hello", 2)
    reconciler.reconcile()
    cloud.requests.clear()
    cloud.deploy(first, cloud.blobs[first.bundle_sha256])
    reconciler.reconcile()
    assert cloud.paths() == [DESIRED, STATUS]
    assert cloud.reported()[-1] == ("hello", 1, "active")
    assert store.active_versions() == {"hello": 1}


def test_task_no_longer_desired_is_deactivated(
    cloud: FakeCloud, reconciler: Reconciler, store: DeviceStore
) -> None:
    """A task withdrawn from the desired state stops being active; its files stay."""
    cloud.release("hello", 1)
    reconciler.reconcile()
    cloud.withdraw("hello")
    reconciler.reconcile()
    assert store.active_versions() == {}
    assert [v.state for v in store.versions("hello")] == [VersionState.previous]


def test_broken_transfer_is_resumed_not_reported_failed(
    cloud: FakeCloud, reconciler: Reconciler, store: DeviceStore
) -> None:
    """A transfer cut short raises CloudUnavailable; the next pass resumes with Range."""
    task = cloud.release("hello", 1, files={"model.bin": bytes(5000)})
    cloud.cut_next_download_at = 64
    with pytest.raises(CloudUnavailable):
        reconciler.reconcile()
    assert store.versions() == []
    reconciler.reconcile()
    assert cloud.requests[-2].headers["range"] == "bytes=64-"
    assert store.active_versions() == {"hello": 1}
    assert ("hello", 1, "failed") not in cloud.reported()
    assert not (store.path.parent / "downloads" / f"{task.bundle_sha256}.part").exists()


def test_undelivered_reports_go_out_with_the_next_status_request(
    cloud: FakeCloud, reconciler: Reconciler, store: DeviceStore
) -> None:
    """Reports refused by a 503 stay queued and are sent, in order, with the next pass."""
    cloud.release("hello", 1)
    cloud.status_failures = 1
    with pytest.raises(CloudUnavailable):
        reconciler.reconcile()
    assert store.count_pending_reports() == 2
    cloud.release("hello", 2)
    reconciler.reconcile()
    assert cloud.paths("POST")[-1] == STATUS
    assert cloud.reported() == [
        ("hello", 1, "downloaded"),
        ("hello", 1, "active"),
        ("hello", 2, "downloaded"),
        ("hello", 2, "active"),
    ]
    assert json.loads(cloud.requests[-1].body)["reports"][0]["version"] == 1
    assert store.count_pending_reports() == 0


def test_a_nudge_for_the_revision_already_fetched_wakes_nothing(
    cloud: FakeCloud, store: DeviceStore, tmp_path: Path
) -> None:
    """A desired event whose revision was just reconciled does not trigger another pass."""
    sync = SyncAgent(client_for(cloud), store, reconciler_for(cloud, store, tmp_path))
    sync._seen_rev = cloud.rev
    sync._nudged(json.dumps({"desired_rev": cloud.rev}))
    assert not sync._wake.is_set()
    sync._nudged(json.dumps({"desired_rev": cloud.rev + 1}))
    assert sync._wake.is_set()


def test_partial_download_of_a_withdrawn_task_is_removed(
    cloud: FakeCloud, reconciler: Reconciler, store: DeviceStore
) -> None:
    """A .part file for a bundle the cloud no longer asks for is deleted on the next pass."""
    task = cloud.release("hello", 1, files={"model.bin": bytes(5000)})
    cloud.cut_next_download_at = 64
    with pytest.raises(CloudUnavailable):
        reconciler.reconcile()
    partial = store.path.parent / "downloads" / f"{task.bundle_sha256}.part"
    assert partial.exists()
    cloud.withdraw("hello")
    reconciler.reconcile()
    assert not partial.exists()
