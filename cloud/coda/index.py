"""The ANN index of one pool, as an immutable snapshot persisted in the data directory.

Below ``exact_below`` samples a snapshot is an exact inner-product index (``IndexFlatIP``):
exact answers at a cost that stays small there. From that size on it is an HNSW graph
(``IndexHNSWFlat``): sub-millisecond to few-millisecond queries at high recall, built
incrementally (a new snapshot adds the new samples to a copy of the previous graph), and
no training step that would need a representative sample first, as IVF does. A snapshot
is never changed once built: queries read the current one while the builder makes the
next, and the swap is one reference assignment.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import faiss
import numpy as np
from numpy.typing import NDArray

EXACT = "exact"
HNSW = "hnsw"
# Graph degree 16 builds twice as fast as 32 (1M x 32 dims: ~170 s against ~310 s on two
# busy cores) and still gives recall@100 of ~0.97 at 1M with the search depth below.
HNSW_M = 16
HNSW_EF_CONSTRUCTION = 64
HNSW_EF_SEARCH = 200  # search depth; at least the largest k a request may ask for
KEEP_VERSIONS = 2  # the current snapshot and the one before, for a reader mid-swap
_META = "meta.json"


@dataclass(frozen=True)
class Snapshot:
    """An index over ``ids`` (pool sample ids, in index order), never modified."""

    version: int
    kind: str
    index: Any  # a faiss index
    ids: NDArray[np.int64]
    last_sample_id: int
    built_at: datetime
    build_seconds: float

    @property
    def size(self) -> int:
        return int(self.ids.shape[0])

    def search(self, queries: NDArray[np.float32], k: int) -> tuple[NDArray[Any], NDArray[Any]]:
        """Scores and sample ids [queries, k] (ids -1 and score -inf where the pool is short)."""
        k = min(k, self.size)
        if k == 0:
            empty = np.zeros((queries.shape[0], 0))
            return empty.astype(np.float32), empty.astype(np.int64)
        scores, rows = self.index.search(queries, k)
        ids = np.where(rows >= 0, self.ids[np.clip(rows, 0, None)], -1)
        return scores, ids


def nearest_unique(
    snapshot: Snapshot, queries: NDArray[np.float32], k: int, cap: int
) -> tuple[list[tuple[int, float]], bool]:
    """The ``k`` nearest samples of each query, each sample once with its best score, best
    first (ties by id), cut to ``cap``; and whether the cap cut anything."""
    scores, ids = snapshot.search(queries, k)
    best: dict[int, float] = {}
    for sample_id, score in zip(ids.ravel().tolist(), scores.ravel().tolist(), strict=True):
        if sample_id >= 0 and score > best.get(sample_id, -np.inf):
            best[sample_id] = float(score)
    ranked = sorted(best.items(), key=lambda item: (-item[1], item[0]))
    return ranked[:cap], len(ranked) > cap


def build(
    previous: Snapshot | None,
    ids: NDArray[np.int64],
    vectors: NDArray[np.float32],
    dim: int,
    exact_below: int,
) -> Snapshot:
    """The next snapshot: ``previous`` plus the new ``ids``/``vectors`` (ids ascending)."""
    started = time.perf_counter()
    total = (previous.size if previous else 0) + len(ids)
    kind = EXACT if total < exact_below else HNSW
    if previous is not None and previous.kind == kind:
        index = faiss.clone_index(previous.index)
        all_ids = np.concatenate([previous.ids, ids])
    else:
        index = _empty(kind, dim)
        old_vectors = (
            previous.index.reconstruct_n(0, previous.size)
            if previous is not None and previous.size
            else np.zeros((0, dim), np.float32)
        )
        if len(old_vectors):
            index.add(np.ascontiguousarray(old_vectors, np.float32))
        all_ids = np.concatenate([previous.ids, ids]) if previous else ids
    if len(ids):
        index.add(np.ascontiguousarray(vectors, np.float32))
    last = int(all_ids[-1]) if len(all_ids) else 0
    return Snapshot(
        version=(previous.version if previous else 0) + 1,
        kind=kind,
        index=index,
        ids=all_ids.astype(np.int64),
        last_sample_id=last,
        built_at=datetime.now(UTC),
        build_seconds=time.perf_counter() - started,
    )


def _empty(kind: str, dim: int) -> Any:
    if kind == EXACT:
        return faiss.IndexFlatIP(dim)
    index = faiss.IndexHNSWFlat(dim, HNSW_M, faiss.METRIC_INNER_PRODUCT)
    index.hnsw.efConstruction = HNSW_EF_CONSTRUCTION
    index.hnsw.efSearch = HNSW_EF_SEARCH
    return index


def save(snapshot: Snapshot, pool_dir: Path) -> Path:
    """Write the snapshot to ``pool_dir/<version>/`` atomically (a scratch folder renamed
    into place), then delete versions older than the previous one."""
    pool_dir.mkdir(parents=True, exist_ok=True)
    final = pool_dir / f"{snapshot.version:08d}"
    scratch = pool_dir / f".{snapshot.version:08d}.{os.getpid()}.partial"
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir()
    faiss.write_index(snapshot.index, str(scratch / "index.faiss"))
    np.save(scratch / "ids.npy", snapshot.ids)
    meta = {
        "version": snapshot.version,
        "kind": snapshot.kind,
        "last_sample_id": snapshot.last_sample_id,
        "built_at": snapshot.built_at.isoformat(),
        "build_seconds": snapshot.build_seconds,
    }
    # meta.json last: a folder without it is unfinished and never loaded.
    (scratch / _META).write_text(json.dumps(meta))
    shutil.rmtree(final, ignore_errors=True)
    os.replace(scratch, final)
    for old in _versions(pool_dir)[:-KEEP_VERSIONS]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def load_latest(pool_dir: Path) -> Snapshot | None:
    """The newest complete snapshot in ``pool_dir``, or None; a damaged one is skipped."""
    for folder in reversed(_versions(pool_dir)):
        try:
            meta = json.loads((folder / _META).read_text())
            index: Any = faiss.read_index(str(folder / "index.faiss"))
            ids = np.load(folder / "ids.npy")
            if index.ntotal != len(ids):
                continue
            if meta["kind"] == HNSW:
                index.hnsw.efSearch = HNSW_EF_SEARCH
            return Snapshot(
                version=int(meta["version"]),
                kind=str(meta["kind"]),
                index=index,
                ids=ids.astype(np.int64),
                last_sample_id=int(meta["last_sample_id"]),
                built_at=datetime.fromisoformat(meta["built_at"]),
                build_seconds=float(meta["build_seconds"]),
            )
        except (OSError, ValueError, KeyError, RuntimeError):
            continue
    return None


def _versions(pool_dir: Path) -> list[Path]:
    if not pool_dir.is_dir():
        return []
    return sorted(p for p in pool_dir.iterdir() if p.is_dir() and p.name.isdigit())
