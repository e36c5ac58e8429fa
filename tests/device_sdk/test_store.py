"""The device's SQLite store: schema versions, durability across reopen, thread safety."""

from __future__ import annotations

import sqlite3
import threading
from datetime import UTC, datetime
from pathlib import Path

import pytest

from device_sdk import DeviceStore, Identity, LocalStoreError, VersionState, _schema
from device_sdk.wire import DesiredState, StatusReport, TaskState


def identity() -> Identity:
    return Identity(
        device_id="dev-1",
        token="t",
        platform_public_key="k",
        cloud_url="http://cloud",
        registered_at=datetime(2026, 1, 1, tzinfo=UTC),
    )


def report(version: int = 1, state: TaskState = TaskState.active) -> StatusReport:
    return StatusReport(task="hello", version=version, state=state, deployment_id=1)


def activate(store: DeviceStore, version: int) -> None:
    store.activate(
        "hello",
        version,
        bundle_sha256="a" * 64,
        path=store.path.parent / f"tasks/hello/{version}",
        deployment_id=1,
    )


def test_new_store_is_at_the_latest_schema_version(tmp_path: Path) -> None:
    """A fresh device.db has user_version equal to the number of migrations."""
    store = DeviceStore(tmp_path / "device.db")
    assert store.schema_version == len(_schema.MIGRATIONS) >= 1
    store.close()


def test_store_uses_wal(tmp_path: Path) -> None:
    """The database file is in write-ahead-log mode."""
    DeviceStore(tmp_path / "device.db").close()
    with sqlite3.connect(tmp_path / "device.db") as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_reopen_keeps_identity_tasks_desired_and_reports(tmp_path: Path) -> None:
    """Everything written survives closing and reopening the store."""
    store = DeviceStore(tmp_path / "device.db")
    store.save_identity(identity())
    activate(store, 1)
    store.save_desired(DesiredState(rev=4, tasks=[]), '"4"')
    store.queue_reports([report()])
    store.close()
    reopened = DeviceStore(tmp_path / "device.db")
    assert reopened.identity() == identity()
    assert reopened.active_versions() == {"hello": 1}
    cached = reopened.cached_desired()
    assert cached is not None and (cached.etag, cached.state.rev) == ('"4"', 4)
    assert [r for _, r in reopened.pending_reports()] == [report()]
    reopened.close()


def test_a_later_migration_is_applied_once_on_reopen(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A migration appended to MIGRATIONS runs on the next open, once, keeping the data."""
    DeviceStore(tmp_path / "device.db").close()
    calls = []

    def v2(db: sqlite3.Connection) -> None:
        calls.append(1)
        db.execute("CREATE TABLE events (id INTEGER PRIMARY KEY)")

    monkeypatch.setattr(_schema, "MIGRATIONS", [*_schema.MIGRATIONS, v2])
    for _ in range(2):
        store = DeviceStore(tmp_path / "device.db")
        assert store.schema_version == len(_schema.MIGRATIONS)
        store.close()
    assert calls == [1]


def test_a_failing_migration_leaves_the_old_version(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A migration that raises is rolled back with its version bump."""
    DeviceStore(tmp_path / "device.db").close()

    def broken(db: sqlite3.Connection) -> None:
        db.execute("CREATE TABLE half (id INTEGER)")
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(_schema, "MIGRATIONS", [*_schema.MIGRATIONS, broken])
    with pytest.raises(RuntimeError):
        DeviceStore(tmp_path / "device.db")
    monkeypatch.undo()
    store = DeviceStore(tmp_path / "device.db")
    assert store.schema_version == len(_schema.MIGRATIONS)
    store.close()


def test_a_newer_schema_is_refused(tmp_path: Path) -> None:
    """A device.db written by a newer SDK is refused with a message naming the fix."""
    DeviceStore(tmp_path / "device.db").close()
    with sqlite3.connect(tmp_path / "device.db") as db:
        db.execute("PRAGMA user_version = 99")
    with pytest.raises(LocalStoreError, match="upgrade the SDK"):
        DeviceStore(tmp_path / "device.db")


def test_activate_turns_the_old_active_into_previous(tmp_path: Path) -> None:
    """Activating version 2 leaves version 1 on record as previous."""
    store = DeviceStore(tmp_path / "device.db")
    activate(store, 1)
    activate(store, 2)
    assert {v.version: v.state for v in store.versions("hello")} == {
        1: VersionState.previous,
        2: VersionState.active,
    }
    store.close()


def test_activation_and_its_reports_commit_together(tmp_path: Path) -> None:
    """Reports passed to activate() are queued in the same transaction."""
    store = DeviceStore(tmp_path / "device.db")
    store.activate(
        "hello", 1, bundle_sha256="a" * 64, path=tmp_path, deployment_id=1, reports=[report()]
    )
    assert [r for _, r in store.pending_reports()] == [report()]
    store.close()


def test_failure_does_not_touch_the_active_version(tmp_path: Path) -> None:
    """Recording a failed version 2 keeps version 1 active and counts attempts."""
    store = DeviceStore(tmp_path / "device.db")
    activate(store, 1)
    for _ in range(2):
        store.record_failure(
            "hello", 2, bundle_sha256="b" * 64, reason="bad", desired_rev=3, deployment_id=1
        )
    failed = store.version("hello", 2)
    assert store.active_versions() == {"hello": 1}
    assert failed is not None and (failed.state, failed.attempts, failed.failed_rev) == (
        VersionState.failed,
        2,
        3,
    )
    store.close()


def test_paths_are_kept_relative_to_the_data_directory(tmp_path: Path) -> None:
    """A store moved with its data directory resolves task paths in the new place."""
    store = DeviceStore(tmp_path / "a" / "device.db")
    activate(store, 1)
    store.close()
    (tmp_path / "a").rename(tmp_path / "b")
    moved = DeviceStore(tmp_path / "b" / "device.db")
    assert moved.versions()[0].path == tmp_path / "b" / "tasks" / "hello" / "1"
    moved.close()


def test_delivered_reports_are_deleted(tmp_path: Path) -> None:
    """delete_reports removes exactly the delivered ids."""
    store = DeviceStore(tmp_path / "device.db")
    store.queue_reports([report(1), report(2)])
    first, _ = store.pending_reports()
    store.delete_reports([first[0]])
    assert [r.version for _, r in store.pending_reports()] == [2]
    store.close()


def test_threads_share_the_store(tmp_path: Path) -> None:
    """Eight threads queueing reports at once lose none of them."""
    store = DeviceStore(tmp_path / "device.db")

    def work() -> None:
        for _ in range(25):
            store.queue_reports([report()])
            store.active_versions()

    threads = [threading.Thread(target=work) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert len(store.pending_reports(limit=1000)) == 200
    store.close()
