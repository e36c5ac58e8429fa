"""Write transactions on the device's SQLite files."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import pytest

from device_sdk import Device
from device_sdk._sqlite_tx import _write_transaction


class FailingCommit:
    """A connection whose COMMIT fails once, as on a full disk."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db
        self.fail_next_commit = True

    @property
    def in_transaction(self) -> bool:
        return self.db.in_transaction

    def execute(self, sql: str, *args: object) -> sqlite3.Cursor:
        if sql == "COMMIT" and self.fail_next_commit:
            self.fail_next_commit = False
            raise sqlite3.OperationalError("database or disk is full")
        return self.db.execute(sql, *args)


def test_failed_commit_rolls_back_and_the_next_write_begins(tmp_path: Path) -> None:
    """After a COMMIT fails, the write is rolled back and the connection can begin again."""
    db = sqlite3.connect(tmp_path / "t.db", isolation_level=None)
    db.execute("CREATE TABLE t (x INTEGER)")
    flaky = FailingCommit(db)
    lock = threading.Lock()
    with pytest.raises(sqlite3.OperationalError), _write_transaction(flaky, lock) as conn:  # type: ignore[arg-type]
        conn.execute("INSERT INTO t VALUES (1)")
    assert not db.in_transaction
    with _write_transaction(flaky, lock) as conn:  # type: ignore[arg-type]
        conn.execute("INSERT INTO t VALUES (2)")
    assert db.execute("SELECT x FROM t").fetchall() == [(2,)]
    db.close()


def test_device_refuses_an_outbox_too_small_for_one_payload(tmp_path: Path) -> None:
    """A Device whose outbox could not hold one largest payload is refused before it starts."""
    with pytest.raises(ValueError, match="outbox_max_bytes"):
        Device("http://127.0.0.1:9", enrollment_key="k", data_dir=tmp_path, outbox_max_bytes=1000)
