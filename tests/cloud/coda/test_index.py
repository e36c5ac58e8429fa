"""Index snapshots: exact below the threshold, HNSW above, immutable, persisted, reloaded."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from cloud.coda import index
from cloud.coda.ratelimit import RateLimiter


def _vectors(n: int, dim: int = 16, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, dim)).astype(np.float32)
    unit: np.ndarray = x / np.linalg.norm(x, axis=1, keepdims=True)
    return unit


def test_small_pools_get_an_exact_index_and_exact_answers() -> None:
    """Below the threshold the snapshot is exact: its top-k is the brute-force top-k."""
    x = _vectors(300)
    snap = index.build(None, np.arange(1, 301), x, 16, exact_below=1000)
    assert snap.kind == index.EXACT and snap.size == 300
    scores, ids = snap.search(x[:5], 10)
    expected = np.argsort(-(x[:5] @ x.T), axis=1)[:, :10] + 1
    assert (ids == expected).all()
    assert ids[0, 0] == 1 and np.isclose(scores[0, 0], 1.0)


def test_crossing_the_threshold_switches_to_hnsw_keeping_every_sample() -> None:
    """A build that crosses the threshold gives an HNSW snapshot over old and new samples."""
    x = _vectors(600)
    first = index.build(None, np.arange(1, 301), x[:300], 16, exact_below=500)
    second = index.build(first, np.arange(301, 601), x[300:], 16, exact_below=500)
    assert first.kind == index.EXACT and second.kind == index.HNSW
    assert second.size == 600 and second.version == first.version + 1
    _, ids = second.search(x[[10, 450]], 1)
    assert ids[:, 0].tolist() == [11, 451]


def test_a_new_snapshot_leaves_the_previous_one_unchanged() -> None:
    """Snapshots are immutable: building the next does not add to the one being read."""
    x = _vectors(200)
    first = index.build(None, np.arange(1, 101), x[:100], 16, exact_below=1000)
    index.build(first, np.arange(101, 201), x[100:], 16, exact_below=1000)
    assert first.index.ntotal == 100 and first.size == 100


def test_hnsw_recall_is_high_on_a_clustered_pool() -> None:
    """HNSW's top-20 overlaps the exact top-20 by at least 95% on 5,000 clustered vectors."""
    rng = np.random.default_rng(1)
    centers = rng.normal(size=(50, 16))
    x = (centers[rng.integers(0, 50, 5000)] + 0.5 * rng.normal(size=(5000, 16))).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    snap = index.build(None, np.arange(5000), x, 16, exact_below=10)
    exact = np.argsort(-(x[:50] @ x.T), axis=1)[:, :20]
    _, ids = snap.search(x[:50], 20)
    recall = np.mean([len(set(a) & set(b)) / 20 for a, b in zip(ids, exact, strict=True)])
    assert recall >= 0.95


def test_search_beyond_the_pool_size_returns_what_there_is() -> None:
    """k larger than the pool returns every sample, no padding ids."""
    snap = index.build(None, np.arange(1, 4), _vectors(3), 16, exact_below=10)
    _, ids = snap.search(_vectors(1, seed=5), 50)
    assert sorted(ids[0].tolist()) == [1, 2, 3]


def test_saved_snapshot_loads_back_identical(tmp_path: Path) -> None:
    """save then load_latest gives the same version, kind, ids and answers."""
    x = _vectors(700)
    snap = index.build(None, np.arange(1, 701), x, 16, exact_below=100)
    index.save(snap, tmp_path)
    loaded = index.load_latest(tmp_path)
    assert loaded is not None
    assert (loaded.version, loaded.kind, loaded.last_sample_id) == (1, index.HNSW, 700)
    assert (loaded.ids == snap.ids).all()
    assert (loaded.search(x[:3], 5)[1] == snap.search(x[:3], 5)[1]).all()


def test_unfinished_and_damaged_snapshots_are_skipped(tmp_path: Path) -> None:
    """A folder without meta.json, or with a damaged index, never loads; the last good one does."""
    x = _vectors(50)
    first = index.build(None, np.arange(1, 51), x, 16, exact_below=100)
    index.save(first, tmp_path)
    (tmp_path / "00000002").mkdir()  # a crash before meta.json was written
    broken = tmp_path / "00000003"
    broken.mkdir()
    (broken / "meta.json").write_text('{"version": 3, "kind": "exact"}')
    (broken / "index.faiss").write_bytes(b"not an index")
    loaded = index.load_latest(tmp_path)
    assert loaded is not None and loaded.version == 1


def test_only_the_two_newest_versions_are_kept(tmp_path: Path) -> None:
    """Saving a third version deletes the first."""
    x = _vectors(30)
    snap = index.build(None, np.arange(1, 11), x[:10], 16, exact_below=100)
    for start in (11, 21):
        index.save(snap, tmp_path)
        snap = index.build(snap, np.arange(start, start + 10), x[start - 1 : start + 9], 16, 100)
    index.save(snap, tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["00000002", "00000003"]


def test_rate_limiter_allows_a_burst_then_refills() -> None:
    """Two calls pass, the third waits 30 s at 2 a minute, and passes after the refill."""
    now = [0.0]
    limiter = RateLimiter(per_minute=2, burst=2, clock=lambda: now[0])
    assert limiter.acquire("a") == 0.0 and limiter.acquire("a") == 0.0
    assert limiter.acquire("a") == 30.0
    assert limiter.acquire("b") == 0.0
    now[0] = 30.0
    assert limiter.acquire("a") == 0.0
