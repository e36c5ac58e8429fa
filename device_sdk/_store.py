"""The device's local store: one SQLite file, ``<data_dir>/device.db``.

It holds the device's identity, the task versions on disk and which one of each task is
active, the last desired state fetched from the cloud, and the status reports not yet
delivered. Write-ahead logging with ``synchronous=FULL`` makes every committed change
survive a crash or power loss; one connection behind a lock serves the sync thread and
the app's threads alike.

The schema is versioned with ``PRAGMA user_version`` and the migrations in ``_schema``.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Sequence
from contextlib import AbstractContextManager
from datetime import UTC, datetime
from pathlib import Path

from device_sdk import _schema
from device_sdk._errors import LocalStoreError
from device_sdk._records import CachedDesired, Identity, InstalledTask, VersionState
from device_sdk._sqlite_tx import _write_transaction
from device_sdk.wire import DesiredState, StatusReport


def _now() -> str:
    return datetime.now(UTC).isoformat()


def _time(value: str | None) -> datetime | None:
    return None if value is None else datetime.fromisoformat(value)


class DeviceStore:
    """The SQLite store of one data directory; safe to share between threads."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._lock = threading.RLock()
        # isolation_level=None: transactions are begun and ended explicitly below.
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30)
        try:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._migrate()
        except Exception:
            self._db.close()
            raise

    def close(self) -> None:
        """Close the connection; the store cannot be used afterwards."""
        with self._lock:
            self._db.close()

    @property
    def schema_version(self) -> int:
        """The schema version of the file (``PRAGMA user_version``)."""
        with self._lock:
            version: int = self._db.execute("PRAGMA user_version").fetchone()[0]
            return version

    def _migrate(self) -> None:
        migrations = _schema.MIGRATIONS
        known = len(migrations)
        with self._transaction() as db:
            current: int = db.execute("PRAGMA user_version").fetchone()[0]
            if current > known:
                raise LocalStoreError(
                    f"{self.path} has schema version {current}, but this SDK knows only up to "
                    f"{known}; upgrade the SDK, or use another data_dir."
                )
            for version in range(current, known):
                migrations[version](db)
            db.execute(f"PRAGMA user_version = {known:d}")

    def _transaction(self) -> AbstractContextManager[sqlite3.Connection]:
        return _write_transaction(self._db, self._lock)

    def transaction(self) -> AbstractContextManager[sqlite3.Connection]:
        """A write transaction on the store's connection, committed on exit, for modules
        that own tables of their own (``_events``: events and features)."""
        return self._transaction()

    def query(self, sql: str, parameters: Sequence[object] = ()) -> list[sqlite3.Row]:
        """The rows of one read statement; columns by name or position."""
        return self._query(sql, parameters)

    def _query(self, sql: str, parameters: Sequence[object] = ()) -> list[sqlite3.Row]:
        with self._lock:
            cursor = self._db.execute(sql, parameters)
            cursor.row_factory = sqlite3.Row
            return cursor.fetchall()

    # --- identity -------------------------------------------------------------------

    def identity(self) -> Identity | None:
        """The registered identity, or None before the first registration."""
        rows = self._query("SELECT * FROM identity")
        if not rows:
            return None
        row = rows[0]
        return Identity(
            device_id=row["device_id"],
            token=row["token"],
            platform_public_key=row["platform_public_key"],
            cloud_url=row["cloud_url"],
            registered_at=datetime.fromisoformat(row["registered_at"]),
        )

    def save_identity(self, identity: Identity) -> None:
        """Persist the identity (replacing any earlier one)."""
        with self._transaction() as db:
            db.execute(
                "INSERT OR REPLACE INTO identity VALUES (1, ?, ?, ?, ?, ?)",
                (
                    identity.device_id,
                    identity.token,
                    identity.platform_public_key,
                    identity.cloud_url,
                    identity.registered_at.isoformat(),
                ),
            )

    # --- desired state --------------------------------------------------------------

    def cached_desired(self) -> CachedDesired | None:
        """The last desired state fetched from the cloud, if any."""
        rows = self._query("SELECT etag, body FROM desired")
        if not rows:
            return None
        return CachedDesired(rows[0]["etag"], DesiredState.model_validate_json(rows[0]["body"]))

    def save_desired(self, state: DesiredState, etag: str | None) -> None:
        """Remember ``state`` and its ETag, so a 304 can reuse it."""
        with self._transaction() as db:
            db.execute(
                "INSERT OR REPLACE INTO desired VALUES (1, ?, ?, ?)",
                (etag, state.rev, state.model_dump_json()),
            )

    # --- task versions --------------------------------------------------------------

    def versions(self, task: str | None = None) -> list[InstalledTask]:
        """Every known task version (of ``task`` only, if given), by task then version."""
        if task is None:
            rows = self._query("SELECT * FROM task_versions ORDER BY task, version")
        else:
            rows = self._query(
                "SELECT * FROM task_versions WHERE task = ? ORDER BY version", (task,)
            )
        return [self._installed(row) for row in rows]

    def version(self, task: str, version: int) -> InstalledTask | None:
        """One task version, or None if the device never had it."""
        rows = self._query(
            "SELECT * FROM task_versions WHERE task = ? AND version = ?", (task, version)
        )
        return self._installed(rows[0]) if rows else None

    def active_versions(self) -> dict[str, int]:
        """``{task: version}`` of every active task."""
        rows = self._query("SELECT task, version FROM task_versions WHERE state = 'active'")
        return {row["task"]: row["version"] for row in rows}

    def activate(
        self,
        task: str,
        version: int,
        *,
        bundle_sha256: str,
        path: Path,
        deployment_id: int | None,
        reports: Sequence[StatusReport] = (),
    ) -> None:
        """Make ``version`` the active one of ``task`` and queue ``reports``, atomically.

        The version active before becomes ``previous`` and keeps its files.
        """
        now = _now()
        with self._transaction() as db:
            db.execute(
                "UPDATE task_versions SET state = 'previous', updated_at = ? "
                "WHERE task = ? AND state = 'active'",
                (now, task),
            )
            db.execute(
                """INSERT INTO task_versions (task, version, bundle_sha256, path, state, reason,
                       deployment_id, attempts, failed_rev, installed_at, updated_at)
                   VALUES (?, ?, ?, ?, 'active', NULL, ?, 0, NULL, ?, ?)
                   ON CONFLICT (task, version) DO UPDATE SET
                       bundle_sha256 = excluded.bundle_sha256, path = excluded.path,
                       state = 'active', reason = NULL, deployment_id = excluded.deployment_id,
                       attempts = 0, failed_rev = NULL,
                       installed_at = coalesce(task_versions.installed_at, excluded.installed_at),
                       updated_at = excluded.updated_at""",
                (task, version, bundle_sha256, self._relative(path), deployment_id, now, now),
            )
            self._queue(db, reports, now)

    def record_failure(
        self,
        task: str,
        version: int,
        *,
        bundle_sha256: str,
        reason: str,
        desired_rev: int,
        deployment_id: int | None,
        reports: Sequence[StatusReport] = (),
    ) -> None:
        """Mark ``version`` of ``task`` failed with ``reason`` and queue ``reports``, atomically.

        The active version, if any, is left as it is.
        """
        now = _now()
        with self._transaction() as db:
            db.execute(
                """INSERT INTO task_versions (task, version, bundle_sha256, path, state, reason,
                       deployment_id, attempts, failed_rev, installed_at, updated_at)
                   VALUES (?, ?, ?, NULL, 'failed', ?, ?, 1, ?, NULL, ?)
                   ON CONFLICT (task, version) DO UPDATE SET
                       bundle_sha256 = excluded.bundle_sha256, path = NULL, state = 'failed',
                       reason = excluded.reason, deployment_id = excluded.deployment_id,
                       attempts = task_versions.attempts + 1, failed_rev = excluded.failed_rev,
                       updated_at = excluded.updated_at
                   WHERE task_versions.state != 'active'""",
                (task, version, bundle_sha256, reason[:500], deployment_id, desired_rev, now),
            )
            self._queue(db, reports, now)

    def deactivate(self, task: str) -> None:
        """Stop running ``task``: its active version becomes ``previous`` (files kept)."""
        with self._transaction() as db:
            db.execute(
                "UPDATE task_versions SET state = 'previous', updated_at = ? "
                "WHERE task = ? AND state = 'active'",
                (_now(), task),
            )

    def forget(self, task: str, version: int) -> None:
        """Drop the record of one task version (after its files were removed)."""
        with self._transaction() as db:
            db.execute("DELETE FROM task_versions WHERE task = ? AND version = ?", (task, version))

    # --- status outbox --------------------------------------------------------------

    def queue_reports(self, reports: Sequence[StatusReport]) -> None:
        """Keep ``reports`` until :meth:`delete_reports` confirms their delivery."""
        with self._transaction() as db:
            self._queue(db, reports, _now())

    def pending_reports(self, limit: int = 100) -> list[tuple[int, StatusReport]]:
        """The oldest undelivered reports, with the ids to delete them by."""
        rows = self._query("SELECT id, report FROM status_outbox ORDER BY id LIMIT ?", (limit,))
        return [(row["id"], StatusReport.model_validate_json(row["report"])) for row in rows]

    def count_pending_reports(self) -> int:
        """How many reports wait for delivery."""
        count: int = self._query("SELECT count(*) FROM status_outbox")[0][0]
        return count

    def delete_reports(self, ids: Sequence[int]) -> None:
        """Forget reports the cloud accepted."""
        with self._transaction() as db:
            db.executemany("DELETE FROM status_outbox WHERE id = ?", [(i,) for i in ids])

    @staticmethod
    def _queue(db: sqlite3.Connection, reports: Sequence[StatusReport], now: str) -> None:
        db.executemany(
            "INSERT INTO status_outbox (report, created_at) VALUES (?, ?)",
            [(json.dumps(r.model_dump(mode="json")), now) for r in reports],
        )

    # Paths are kept relative to the data directory, so the directory can move (an app
    # container's path may change between app updates) without breaking the store.
    def _relative(self, path: Path) -> str:
        try:
            return path.relative_to(self.path.parent).as_posix()
        except ValueError:
            return str(path)

    def _installed(self, row: sqlite3.Row) -> InstalledTask:
        return InstalledTask(
            task=row["task"],
            version=row["version"],
            bundle_sha256=row["bundle_sha256"],
            path=None if row["path"] is None else self.path.parent / row["path"],
            state=VersionState(row["state"]),
            reason=row["reason"],
            deployment_id=row["deployment_id"],
            attempts=row["attempts"],
            failed_rev=row["failed_rev"],
            installed_at=_time(row["installed_at"]),
            updated_at=datetime.fromisoformat(row["updated_at"]),
        )
