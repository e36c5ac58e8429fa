"""The background builder: keeps one immutable index snapshot per pool on this replica.

A thread wakes when samples were ingested (a nudge) or every ``poll_s`` (samples another
replica ingested), reads the samples the current snapshot lacks, builds the next snapshot
beside it, persists it, and swaps it in. Retrieval reads whatever snapshot is current and
never waits on ingestion or on a build. On start, each pool's latest persisted snapshot is
loaded, so a restart serves at once and only adds what arrived since.
"""

from __future__ import annotations

import logging
import os
import shutil
import threading
from collections import defaultdict
from dataclasses import replace
from pathlib import Path

import numpy as np
from numpy.typing import NDArray
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from cloud.coda import index
from cloud.coda.index import Snapshot
from cloud.coda.tables import CodaPoolRow, CodaSampleRow
from cloud.core.db import Database

log = logging.getLogger("tandem.coda")
READ_CHUNK = 50_000
_DELETED = ".deleted-"  # the prefix of a deleted pool's folder while it is removed


class SnapshotBuilder:
    """Owns this replica's snapshots and retrieval counters; thread-safe."""

    def __init__(self, db: Database, root: Path, *, exact_below: int, poll_s: float) -> None:
        self._db = db
        self._root = root
        self._exact_below = exact_below
        self._poll_s = poll_s
        self._snapshots: dict[int, Snapshot] = {}
        self._build_lock = threading.Lock()
        self._count_lock = threading.Lock()
        self._counts: defaultdict[int, list[int]] = defaultdict(lambda: [0, 0])
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._loaded = False

    # -- reading ---------------------------------------------------------------------

    def current(self, pool_id: int) -> Snapshot | None:
        """The snapshot queries of this pool read now (None before the first build)."""
        return self._snapshots.get(pool_id)

    def count_retrieval(self, pool_id: int, returned: int) -> None:
        """Count one retrieval in memory; the builder's loop adds the counts to the pool row."""
        with self._count_lock:
            counts = self._counts[pool_id]
            counts[0] += 1
            counts[1] += returned

    def unflushed(self, pool_id: int) -> tuple[int, int]:
        with self._count_lock:
            retrievals, returned = self._counts.get(pool_id, (0, 0))
        return retrievals, returned

    # -- lifecycle -------------------------------------------------------------------

    def start(self) -> None:
        """Load the persisted snapshots (blocking: call it off the event loop), then start
        the thread, whose first build waits for a nudge or the first poll."""
        if self._thread is not None:
            return
        with self._build_lock:
            if not self._loaded:
                self._load_persisted()
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="coda-index", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the thread (after its current build) and flush the counters."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        self._flush_counts()

    def forget(self, pool_id: int) -> None:
        """The pool was deleted: drop its snapshot, its uncounted retrievals and its
        persisted snapshots on this replica (after a build of it in progress ends). Other
        replicas drop theirs at their next poll."""
        with self._build_lock:
            self._drop(pool_id)

    def nudge(self) -> None:
        """Samples were ingested: build soon rather than at the next poll."""
        self._wake.set()

    def _run(self) -> None:
        while True:
            self._wake.wait(self._poll_s)
            self._wake.clear()
            if self._stop.is_set():
                return
            try:
                self.refresh()
                self._flush_counts()
            except Exception:  # a failed build must not end the loop; the next one retries
                log.exception("coda index build failed; retrying at the next poll")

    # -- building --------------------------------------------------------------------

    def refresh(self, pool_id: int | None = None) -> None:
        """Bring the snapshot of ``pool_id`` (or of every pool) up to date with the database."""
        with self._build_lock:
            if not self._loaded:
                self._load_persisted()
            with self._db.session(write=False) as session:
                query = select(CodaPoolRow.id, CodaPoolRow.name, CodaPoolRow.dim)
                if pool_id is not None:
                    query = query.where(CodaPoolRow.id == pool_id)
                pools = list(session.execute(query))
            if pool_id is None:  # pools deleted through another replica
                for gone in set(self._snapshots) - {pid for pid, _, _ in pools}:
                    self._drop(gone)
            for pid, name, dim in pools:
                if self._stop.is_set() and pool_id is None:
                    return
                self._refresh_pool(pid, name, dim)

    def _pool_dir(self, pool_id: int, name: str) -> Path:
        return self._root / f"{pool_id}-{name}"

    def _drop(self, pool_id: int) -> None:
        self._snapshots.pop(pool_id, None)
        with self._count_lock:
            self._counts.pop(pool_id, None)
        for folder in self._root.glob(f"{pool_id}-*"):  # "<id>-<name>": this pool's only
            _remove(folder)

    def _load_persisted(self) -> None:
        with self._db.session(write=False) as session:
            pools = list(session.execute(select(CodaPoolRow.id, CodaPoolRow.name)))
        live = {self._pool_dir(pid, name).name for pid, name in pools}
        if self._root.is_dir():  # folders of pools deleted while this replica was down
            for folder in self._root.iterdir():
                name = folder.name
                if name.startswith(_DELETED) or (name[:1].isdigit() and name not in live):
                    _remove(folder)
        for pid, name in pools:
            snapshot = index.load_latest(self._pool_dir(pid, name))
            if snapshot is not None:
                self._snapshots[pid] = snapshot
        self._loaded = True

    def _refresh_pool(self, pool_id: int, name: str, dim: int) -> None:
        previous = self._snapshots.get(pool_id)
        with self._db.session(write=False) as session:
            stored = (
                session.scalar(
                    select(func.count())
                    .select_from(CodaSampleRow)
                    .where(CodaSampleRow.pool_id == pool_id)
                )
                or 0
            )
            have = previous.size if previous else 0
            if stored == have:
                return
            after = previous.last_sample_id if previous else 0
            ids, vectors = _read(session, pool_id, dim, after)
            if have + len(ids) != stored:
                # A transaction with lower ids committed after the snapshot was built (ids
                # are not committed in order on PostgreSQL): rebuild from every sample.
                previous = None
                ids, vectors = _read(session, pool_id, dim, 0)
        if not len(ids) and previous is not None:
            return
        snapshot = index.build(previous, ids, vectors, dim, self._exact_below)
        if previous is None and pool_id in self._snapshots:
            snapshot = _renumbered(snapshot, self._snapshots[pool_id].version + 1)
        index.save(snapshot, self._pool_dir(pool_id, name))
        self._snapshots[pool_id] = snapshot
        log.info(
            "coda snapshot built",
            extra={
                "pool": name,
                "version": snapshot.version,
                "samples": snapshot.size,
                "kind": snapshot.kind,
                "seconds": round(snapshot.build_seconds, 3),
            },
        )

    def _flush_counts(self) -> None:
        with self._count_lock:
            counts = {pid: tuple(c) for pid, c in self._counts.items() if c[0]}
            self._counts.clear()
        if not counts:
            return
        try:
            with self._db.session() as session:
                for pid, (retrievals, returned) in counts.items():
                    session.execute(
                        update(CodaPoolRow)
                        .where(CodaPoolRow.id == pid)
                        .values(
                            retrievals=CodaPoolRow.retrievals + retrievals,
                            returned=CodaPoolRow.returned + returned,
                        )
                    )
        except Exception:
            with self._count_lock:  # keep them for the next flush
                for pid, (retrievals, returned) in counts.items():
                    self._counts[pid][0] += retrievals
                    self._counts[pid][1] += returned
            raise


def _read(
    session: Session, pool_id: int, dim: int, after: int
) -> tuple[NDArray[np.int64], NDArray[np.float32]]:
    ids: list[int] = []
    blobs: list[bytes] = []
    last = after
    while True:
        rows = session.execute(
            select(CodaSampleRow.id, CodaSampleRow.embedding)
            .where(CodaSampleRow.pool_id == pool_id, CodaSampleRow.id > last)
            .order_by(CodaSampleRow.id)
            .limit(READ_CHUNK)
        ).all()
        if not rows:
            break
        for sample_id, blob in rows:
            ids.append(sample_id)
            blobs.append(blob)
        last = rows[-1][0]
    vectors = (
        np.frombuffer(b"".join(blobs), np.float32).reshape(len(blobs), dim)
        if blobs
        else np.zeros((0, dim), np.float32)
    )
    return np.asarray(ids, np.int64), vectors


def _remove(folder: Path) -> None:
    """Remove a pool's folder: renamed first, so a removal cut short leaves a folder that
    is never loaded (and is removed at the next start)."""
    doomed = (
        folder
        if folder.name.startswith(_DELETED)
        else folder.with_name(f"{_DELETED}{folder.name}.{os.getpid()}")
    )
    try:
        if doomed != folder:
            os.replace(folder, doomed)
    except OSError:
        log.warning("could not remove the coda folder %s", folder, exc_info=True)
        return
    shutil.rmtree(doomed, ignore_errors=True)


def _renumbered(snapshot: Snapshot, version: int) -> Snapshot:
    return replace(snapshot, version=version)
