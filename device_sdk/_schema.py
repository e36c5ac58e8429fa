"""The local store's schema, versioned with SQLite's ``PRAGMA user_version``.

``MIGRATIONS[n]`` takes the schema from version n to n + 1; the store runs each in the
transaction that records the new version, so a crash mid-migration leaves the old one.
A later change appends a function (events, features, an upload outbox...); it never
edits one that has shipped, because devices in the field already ran it.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable


def _v1_sync(db: sqlite3.Connection) -> None:
    db.execute(
        """CREATE TABLE identity (
            singleton INTEGER PRIMARY KEY CHECK (singleton = 1),
            device_id TEXT NOT NULL,
            token TEXT NOT NULL,
            platform_public_key TEXT NOT NULL,
            cloud_url TEXT NOT NULL,
            registered_at TEXT NOT NULL)"""
    )
    db.execute(
        """CREATE TABLE task_versions (
            task TEXT NOT NULL,
            version INTEGER NOT NULL,
            bundle_sha256 TEXT NOT NULL,
            path TEXT,
            state TEXT NOT NULL CHECK (state IN ('active', 'previous', 'failed')),
            reason TEXT,
            deployment_id INTEGER,
            attempts INTEGER NOT NULL DEFAULT 0,
            failed_rev INTEGER,
            installed_at TEXT,
            updated_at TEXT NOT NULL,
            PRIMARY KEY (task, version))"""
    )
    # At most one active version per task, enforced by the database itself.
    db.execute(
        "CREATE UNIQUE INDEX task_versions_one_active ON task_versions (task) "
        "WHERE state = 'active'"
    )
    db.execute(
        """CREATE TABLE desired (
            singleton INTEGER PRIMARY KEY CHECK (singleton = 1),
            etag TEXT,
            rev INTEGER NOT NULL,
            body TEXT NOT NULL)"""
    )
    db.execute(
        """CREATE TABLE status_outbox (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            report TEXT NOT NULL,
            created_at TEXT NOT NULL)"""
    )


MIGRATIONS: list[Callable[[sqlite3.Connection], None]] = [_v1_sync]
