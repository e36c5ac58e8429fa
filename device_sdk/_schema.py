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


def _v2_outbox(db: sqlite3.Connection) -> None:
    # Items waiting for upload (see _outbox). seq orders them; key is the idempotency key
    # the cloud deduplicates by; size is the payload's length, summed in outbox_size by
    # the triggers below so the size cap costs no scan.
    db.execute(
        """CREATE TABLE outbox (
            seq INTEGER PRIMARY KEY AUTOINCREMENT,
            key TEXT NOT NULL UNIQUE,
            channel TEXT NOT NULL,
            priority INTEGER NOT NULL,
            payload TEXT NOT NULL,
            size INTEGER NOT NULL,
            created_at TEXT NOT NULL)"""
    )
    db.execute("CREATE INDEX outbox_batches ON outbox (channel, seq, size)")
    db.execute("CREATE INDEX outbox_eviction ON outbox (priority, seq, size)")
    db.execute(
        """CREATE TABLE outbox_size (
            singleton INTEGER PRIMARY KEY CHECK (singleton = 1),
            items INTEGER NOT NULL,
            bytes INTEGER NOT NULL)"""
    )
    db.execute("INSERT INTO outbox_size VALUES (1, 0, 0)")
    db.execute(
        """CREATE TRIGGER outbox_added AFTER INSERT ON outbox BEGIN
            UPDATE outbox_size SET items = items + 1, bytes = bytes + new.size;
        END"""
    )
    db.execute(
        """CREATE TRIGGER outbox_removed AFTER DELETE ON outbox BEGIN
            UPDATE outbox_size SET items = items - 1, bytes = bytes - old.size;
        END"""
    )


def _v3_events_features(db: sqlite3.Connection) -> None:
    # Events the app tracked (see _events). id makes a repeated record a no-op; the implicit
    # rowid is the order they were recorded in, which is also the eviction order. The count
    # is kept by triggers, as the outbox's size is, so the cap costs no scan.
    db.execute(
        """CREATE TABLE event_log (
            id TEXT PRIMARY KEY,
            type TEXT NOT NULL,
            ts REAL NOT NULL,
            attrs TEXT NOT NULL)"""
    )
    db.execute(
        """CREATE TABLE event_log_count (
            singleton INTEGER PRIMARY KEY CHECK (singleton = 1),
            events INTEGER NOT NULL)"""
    )
    db.execute("INSERT INTO event_log_count VALUES (1, 0)")
    db.execute(
        """CREATE TRIGGER event_log_added AFTER INSERT ON event_log BEGIN
            UPDATE event_log_count SET events = events + 1;
        END"""
    )
    db.execute(
        """CREATE TRIGGER event_log_removed AFTER DELETE ON event_log BEGIN
            UPDATE event_log_count SET events = events - 1;
        END"""
    )
    # Features: one JSON value per name with its type tag; expires_at (seconds since the
    # epoch) is NULL for a feature without a TTL.
    db.execute(
        """CREATE TABLE features (
            name TEXT PRIMARY KEY,
            value TEXT NOT NULL,
            type TEXT NOT NULL,
            written_at REAL NOT NULL,
            expires_at REAL)"""
    )
    db.execute("CREATE INDEX features_expiry ON features (expires_at) WHERE expires_at IS NOT NULL")


MIGRATIONS: list[Callable[[sqlite3.Connection], None]] = [
    _v1_sync,
    _v2_outbox,
    _v3_events_features,
]
