"""CoDA on MovieLens: does retrieving cloud samples like the user's help on-device learning?

Data: `../shared/datasets/movielens-small`, split at the same global time cut as
`tandem models build` (the 80th percentile of timestamps). The cloud's **pool** is every
rating before the cut (anonymous samples: the edge model's inputs, click label, and the
edge backbone's item/user embedding). The **users** are those with at least
`--min-ratings` ratings from the cut on: none of their ratings after the cut was seen by
the global model or is in the pool. Each user's post-cut ratings are split by time: the
oldest 70 % are the device's local data (of which the newest quarter validates), the
newest 30 % are held out and scored.

Per user, the held-out AUC of:

- **global**: the cloud-trained edge model as shipped (backbone + its head);
- **local**: the head fine-tuned on the local data alone;
- **coda_nofilter**: fine-tuned on local + every retrieved pool sample;
- **coda**: fine-tuned on local + the retrieved samples the personalized filter keeps.

Every fine-tuned head is kept only if it beats the old head on the local validation
split (otherwise the user keeps the global head, so AUC equals global). Retrieval uses
the cloud's own index code (`cloud.coda.index`: the snapshot and the top-k merge that
`POST /v1/coda/retrieve` uses), in process rather than over HTTP.

The same run measures the activation cache: 5 epochs of head training on one user's
local + retrieved samples (the same samples, labels, weights, starting head and
configuration), through the backbone on every epoch and through a new, empty cache (so
its first epoch runs the backbone and fills the cache), the two interleaved, after one
unmeasured warm-up of each; medians of the repeats, of wall time and of the thread's CPU
time, which leaves out time other processes held the cores (the JSON's `cache_speedup`
is the CPU-time ratio). It checks that both give the same head, and times one backbone
pass over the samples, the part of an epoch the cache saves. Then the ANN index on
a pool of 1,000,000 synthetic clustered embeddings (recall@100 against exact search, p50
latency of one query; `--quick`: 50,000), and on-device costs (training time per round,
bytes downloaded per round, storage).

    python bench/coda_eval.py --quick     # within a minute
    python bench/coda_eval.py
    python bench/coda_eval.py --quick --only cache   # the activation cache alone

The last line printed is a JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import faiss  # noqa: E402
from threadpoolctl import threadpool_limits  # noqa: E402

from cloud.coda import index as ann  # noqa: E402
from device_sdk import (  # noqa: E402
    ActivationCache,
    Backbone,
    CodaConfig,
    Head,
    HeadTraining,
    LocalSamples,
    PoolSample,
    RetrieveRequest,
    RetrieveResponse,
    backbone_source,
    cached_source,
    coda_round,
    train_head,
)
from models import coda_pool, metrics  # noqa: E402
from models.build import build_models  # noqa: E402
from models.coda_split import split_edge  # noqa: E402

DATA = ROOT.parent / "shared" / "datasets" / "movielens-small"
CACHE = ROOT / ".bench_cache" / "coda"
LOCAL_SHARE = 0.7


def _models(quick: bool, models_dir: Path | None) -> Path:
    if models_dir is not None:
        return models_dir
    if quick and (CACHE / "full" / "edge.onnx").exists():
        return CACHE / "full"  # the real models, built by an earlier full run
    # --quick without a full build: the quick models (seconds to build, weaker: their
    # AUC figures say little).
    out = CACHE / ("quick" if quick else "full")
    if not (out / "edge.onnx").exists():
        print(f"building the models into {out} (once) ...", flush=True)
        build_models(DATA, out, quick=quick)
    return out


class InProcessPool:
    """The cloud's retrieval over a snapshot built by ``cloud.coda.index``."""

    def __init__(self, samples: coda_pool.Samples, embeddings: np.ndarray, seed: int) -> None:
        self.samples = samples
        self.embeddings = embeddings
        ids = np.arange(1, len(samples) + 1, dtype=np.int64)
        # Exact below 100k: the MovieLens pool is ~72k samples.
        self.snapshot = ann.build(None, ids, embeddings, embeddings.shape[1], exact_below=100_000)
        self.rng = np.random.default_rng(seed)
        self.max_results = 1000

    def _sample(self, sample_id: int, score: float | None) -> PoolSample:
        row = sample_id - 1
        return PoolSample(
            id=sample_id,
            features=self.samples.features(row),
            label=float(self.samples.label[row]),
            embedding=self.embeddings[row].tolist(),
            score=score,
        )

    def retrieve(self, request: RetrieveRequest) -> RetrieveResponse:
        queries = np.asarray(request.queries, np.float32)
        nearest, capped = ann.nearest_unique(self.snapshot, queries, request.k, self.max_results)
        picks = self.rng.choice(self.snapshot.size, request.random, replace=False)
        return RetrieveResponse(
            pool="movielens",
            snapshot_version=self.snapshot.version,
            pool_size=self.snapshot.size,
            samples=[self._sample(i, s) for i, s in nearest],
            random_samples=[self._sample(int(self.snapshot.ids[p]), None) for p in np.sort(picks)],
            capped=capped,
        )


def _users(after: coda_pool.Samples, min_ratings: int, limit: int | None) -> list[np.ndarray]:
    users, counts = np.unique(after.user, return_counts=True)
    chosen = users[counts >= min_ratings]
    rows = [np.flatnonzero(after.user == u) for u in chosen]  # in time order
    rows = [r for r in rows if _both(after.label[r[int(len(r) * LOCAL_SHARE) :]])]
    return rows[:limit] if limit else rows


def _both(labels: np.ndarray) -> bool:
    return bool(labels.min() != labels.max())


def _local(after: coda_pool.Samples, rows: np.ndarray) -> LocalSamples:
    part = after.take(rows)
    return LocalSamples(part.inputs(), part.label, [f"local:{int(r)}" for r in rows])


def _evaluate_users(
    after: coda_pool.Samples,
    users: list[np.ndarray],
    backbone: Backbone,
    head: Head,
    pool: InProcessPool,
    config: CodaConfig,
) -> dict[str, Any]:
    variants = {
        "local": CodaConfig(pool="movielens", use_pool=False, training=config.training),
        "coda_nofilter": CodaConfig(
            pool="movielens", use_filter=False, k=config.k, training=config.training
        ),
        "coda": config,
    }
    aucs: dict[str, list[float]] = {"global": [], **{name: [] for name in variants}}
    accepted: dict[str, int] = dict.fromkeys(variants, 0)
    kept, retrieved, seconds, down, up, cache_bytes = [], [], [], [], [], []
    for rows in users:
        cut = int(len(rows) * LOCAL_SHARE)
        local, test = _local(after, rows[:cut]), after.take(rows[cut:])
        test_act = backbone.activations(test.inputs())
        aucs["global"].append(metrics.auc(test.label, head.predict(test_act)))
        for name, variant in variants.items():
            cache = ActivationCache(backbone)
            result = coda_round(backbone, head, local, pool.retrieve, variant, cache)
            aucs[name].append(metrics.auc(test.label, result.head.predict(test_act)))
            accepted[name] += int(result.accepted)
            if name == "coda":
                kept.append(result.kept)
                retrieved.append(result.retrieved)
                seconds.append(result.train_seconds)
                down.append(result.bytes_down)
                up.append(result.bytes_up)
                cache_bytes.append(cache.nbytes)
    return {
        "aucs": aucs,
        "accepted": accepted,
        "kept": kept,
        "retrieved": retrieved,
        "seconds": seconds,
        "bytes_down": down,
        "bytes_up": up,
        "cache_bytes": cache_bytes,
    }


def _bootstrap(deltas: np.ndarray, seed: int, rounds: int = 2000) -> tuple[float, float]:
    """95 % interval of the mean of per-user differences, resampling users."""
    rng = np.random.default_rng(seed)
    means = deltas[rng.integers(0, len(deltas), (rounds, len(deltas)))].mean(axis=1)
    low, high = np.quantile(means, [0.025, 0.975])
    return float(low), float(high)


def _cache_speedup(
    backbone: Backbone,
    after: coda_pool.Samples,
    rows: np.ndarray,
    pool: InProcessPool,
    repeats: int,
) -> dict[str, float]:
    """5 epochs of head training on one user's local + retrieved samples, with and without
    the activation cache (a new one each time); medians over ``repeats``."""
    local = after.take(rows)
    request_embeddings = backbone.embeddings(local.inputs())
    from device_sdk import summarize

    response = pool.retrieve(
        RetrieveRequest(pool="movielens", queries=summarize(request_embeddings, 4).tolist(), k=200)
    )
    picked = pool.samples.take(np.asarray([s.id - 1 for s in response.samples]))
    inputs = {k: np.concatenate([local.inputs()[k], picked.inputs()[k]]) for k in local.inputs()}
    labels = np.r_[local.label, picked.label]
    weights = np.ones(len(labels))
    keys = [f"s{i}" for i in range(len(labels))]
    config = HeadTraining(epochs=5)
    head = Head(
        np.zeros(backbone.activations({k: v[:1] for k, v in inputs.items()}).shape[1], np.float32),
        0.0,
    )
    plain_head = train_head(head, backbone_source(backbone, inputs), labels, weights, config)
    cached_head = train_head(
        head, cached_source(ActivationCache(backbone), keys, inputs), labels, weights, config
    )
    head_diff = max(
        float(np.abs(plain_head.w - cached_head.w).max()), abs(plain_head.b - cached_head.b)
    )
    plain, cached, plain_cpu, cached_cpu, pass_cpu = [], [], [], [], []
    for _ in range(repeats):
        wall, cpu = time.perf_counter(), time.thread_time()
        train_head(head, backbone_source(backbone, inputs), labels, weights, config)
        plain.append(time.perf_counter() - wall)
        plain_cpu.append(time.thread_time() - cpu)
        cache = ActivationCache(backbone)
        wall, cpu = time.perf_counter(), time.thread_time()
        train_head(head, cached_source(cache, keys, inputs), labels, weights, config)
        cached.append(time.perf_counter() - wall)
        cached_cpu.append(time.thread_time() - cpu)
        cpu = time.thread_time()
        backbone.activations(inputs)
        pass_cpu.append(time.thread_time() - cpu)
    return {
        "plain_s": statistics.median(plain),
        "cached_s": statistics.median(cached),
        "plain_cpu": statistics.median(plain_cpu),
        "cached_cpu": statistics.median(cached_cpu),
        "backbone_pass_cpu": statistics.median(pass_cpu),
        "head_diff": head_diff,
        "rows": len(labels),
    }


def _cache_rows(cache: dict[str, float], row: Any) -> None:
    row(
        "head training, 5 epochs, with cache: wall",
        f"{cache['cached_s'] * 1000:.2f} ms",
        f"without {cache['plain_s'] * 1000:.2f} ms",
        f"{cache['plain_s'] / cache['cached_s']:.2f}x",
    )
    row(
        "head training, 5 epochs, with cache: CPU",
        f"{cache['cached_cpu'] * 1000:.2f} ms",
        f"without {cache['plain_cpu'] * 1000:.2f} ms",
        f"{cache['plain_cpu'] / cache['cached_cpu']:.2f}x",
    )
    row(
        f"  of which one backbone pass ({cache['rows']:.0f} rows): CPU",
        f"{cache['backbone_pass_cpu'] * 1000:.2f} ms",
        "",
        "",
    )
    row("  the two heads' largest difference", f"{cache['head_diff']:.1e}", "", "")


def _cache_summary(cache: dict[str, float]) -> dict[str, Any]:
    return {
        # The thread's CPU time: wall time on these shared cores swings with other work.
        "cache_speedup": round(cache["plain_cpu"] / cache["cached_cpu"], 3),
        "cache_speedup_wall": round(cache["plain_s"] / cache["cached_s"], 3),
        "cache_train_ms": round(cache["cached_cpu"] * 1000, 3),
        "nocache_train_ms": round(cache["plain_cpu"] * 1000, 3),
        "backbone_pass_ms": round(cache["backbone_pass_cpu"] * 1000, 3),
        "cache_head_max_diff": cache["head_diff"],
        "cache_rows": int(cache["rows"]),
    }


def _ann(n: int, dim: int, queries: int, seed: int) -> dict[str, float]:
    """HNSW (the cloud's index above its exact threshold) against exact search."""
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(max(n // 500, 10), dim)).astype(np.float32)

    def draw(count: int) -> np.ndarray:
        x = centers[rng.integers(0, len(centers), count)] + 0.6 * rng.normal(size=(count, dim))
        x = x.astype(np.float32)
        return x / np.linalg.norm(x, axis=1, keepdims=True)

    x, q = draw(n), draw(queries)
    started = time.perf_counter()
    snapshot = ann.build(None, np.arange(n, dtype=np.int64), x, dim, exact_below=1)
    build_s = time.perf_counter() - started
    exact = ann.build(None, np.arange(n, dtype=np.int64), x, dim, exact_below=n + 1)
    _, truth = exact.search(q, 100)
    faiss.omp_set_num_threads(1)  # one query at a time, as a request is served
    hnsw_ms, exact_ms, recalls = [], [], []
    for i in range(queries):
        started = time.perf_counter()
        _, ids = snapshot.search(q[i : i + 1], 100)
        hnsw_ms.append((time.perf_counter() - started) * 1000)
        recalls.append(len(set(ids[0].tolist()) & set(truth[i].tolist())) / 100)
    for i in range(min(queries, 50)):
        started = time.perf_counter()
        exact.search(q[i : i + 1], 100)
        exact_ms.append((time.perf_counter() - started) * 1000)
    faiss.omp_set_num_threads(os.cpu_count() or 1)
    return {
        "recall": float(np.mean(recalls)),
        "p50_ms": statistics.median(hnsw_ms),
        "exact_p50_ms": statistics.median(exact_ms),
        "build_s": build_s,
        "n": n,
    }


def _row(name: str, ours: str, peer: str, ratio: str) -> None:
    print(f"| {name:<44} | {ours:>12} | {peer:>22} | {ratio:>8} |")


def main() -> None:
    # One BLAS thread: the head's matrices are tiny, and threads on busy cores cost far more.
    with threadpool_limits(1):
        _main()


def _main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="within a minute")
    parser.add_argument("--models", type=Path, default=None, help="a `tandem models build` dir")
    parser.add_argument("--min-ratings", type=int, default=40)
    parser.add_argument("--users", type=int, default=None, help="at most this many users")
    parser.add_argument("--ann-size", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--only", choices=["cache"], default=None, help="measure only the activation cache"
    )
    args = parser.parse_args()
    started = time.perf_counter()
    users_limit = args.users or (20 if args.quick else None)
    ann_size = args.ann_size or (50_000 if args.quick else 1_000_000)

    models_dir = _models(args.quick, args.models)
    split = split_edge((models_dir / "edge.onnx").read_bytes())
    backbone = Backbone(split.backbone)
    head = Head(split.head_w, float(split.head_b))
    data = coda_pool.load(DATA)
    embeddings = coda_pool.embed(split.backbone, data.pool)
    pool = InProcessPool(data.pool, embeddings, args.seed)
    users = _users(data.after, args.min_ratings, users_limit)
    biggest = max(users, key=len)
    cache = _cache_speedup(
        backbone,
        data.after,
        biggest[: int(len(biggest) * LOCAL_SHARE)],
        pool,
        51 if args.quick else 101,
    )
    if args.only == "cache":
        _cache_rows(cache, _row)
        print(json.dumps({**_cache_summary(cache), "quick": args.quick}))
        return
    config = CodaConfig(pool="movielens")
    result = _evaluate_users(data.after, users, backbone, head, pool, config)
    aucs = {k: np.asarray(v) for k, v in result["aucs"].items()}
    means = {k: float(v.mean()) for k, v in aucs.items()}
    gain_global = _bootstrap(aucs["coda"] - aucs["global"], args.seed)
    gain_local = _bootstrap(aucs["coda"] - aucs["local"], args.seed)
    gain_filter = _bootstrap(aucs["coda"] - aucs["coda_nofilter"], args.seed)
    improved = float(np.mean(aucs["coda"] > aucs["global"]))
    worse = float(np.mean(aucs["coda"] < aucs["global"]))
    ann_figures = _ann(ann_size, embeddings.shape[1], 100 if args.quick else 200, args.seed)
    storage = len(split.backbone) + split.head_w.nbytes + 4
    n = len(users)

    row = _row
    print(f"\nmodels: {models_dir}")
    print(
        f"CoDA on MovieLens: {n} users with >= {args.min_ratings} ratings after the cut, "
        f"pool {len(data.pool):,} samples, {'quick' if args.quick else 'full'} run"
    )
    row("figure", "ours", "peer / limit", "ratio")
    row("-" * 44, "-" * 12, "-" * 22, "-" * 8)
    row(
        "mean per-user AUC, CoDA",
        f"{means['coda']:.4f}",
        f"global {means['global']:.4f}",
        f"{means['coda'] - means['global']:+.4f}",
    )
    row(
        "mean per-user AUC, local-only fine-tuning",
        f"{means['local']:.4f}",
        f"global {means['global']:.4f}",
        f"{means['local'] - means['global']:+.4f}",
    )
    row(
        "mean per-user AUC, CoDA without filter",
        f"{means['coda_nofilter']:.4f}",
        f"CoDA {means['coda']:.4f}",
        f"{means['coda_nofilter'] - means['coda']:+.4f}",
    )
    for name, (low, high) in (
        ("CoDA - global", gain_global),
        ("CoDA - local-only", gain_local),
        ("CoDA - CoDA without filter", gain_filter),
    ):
        row(f"95% CI of mean per-user AUC gain, {name}", f"[{low:+.4f},", f"{high:+.4f}]", "")
    row("users CoDA improves / worsens (vs global)", f"{improved:.1%}", f"worse {worse:.1%}", "")
    for name in ("local", "coda_nofilter", "coda"):
        row(
            f"new head kept (beat old on validation), {name}",
            f"{result['accepted'][name]}/{n}",
            "",
            "",
        )
    row(
        "pool samples retrieved / kept per round (median)",
        f"{statistics.median(result['retrieved']):.0f}",
        f"kept {statistics.median(result['kept']):.0f}",
        "",
    )
    _cache_rows(cache, row)
    row(
        f"ANN recall@100 at {ann_figures['n']:,} (HNSW)",
        f"{ann_figures['recall']:.4f}",
        "limit >= 0.95",
        "",
    )
    row(
        "ANN query p50, k=100, one query",
        f"{ann_figures['p50_ms']:.3f} ms",
        f"exact {ann_figures['exact_p50_ms']:.2f} ms",
        f"{ann_figures['exact_p50_ms'] / ann_figures['p50_ms']:.1f}x",
    )
    row("ANN index build", f"{ann_figures['build_s']:.1f} s", "", "")
    row(
        "on-device CoDA round time (median)",
        f"{statistics.median(result['seconds']) * 1000:.0f} ms",
        "",
        "",
    )
    row(
        "bytes downloaded / uploaded per round (median)",
        f"{statistics.median(result['bytes_down']):,.0f}",
        f"up {statistics.median(result['bytes_up']):,.0f}",
        "",
    )
    row(
        "storage: backbone + head / activation cache",
        f"{storage:,} B",
        f"cache {statistics.median(result['cache_bytes']):,.0f} B",
        "",
    )
    print(
        f"\nmachine: {platform.machine()}, {os.cpu_count()} cores, Python "
        f"{platform.python_version()}, faiss {faiss.__version__}; load average "
        f"{os.getloadavg()[0]:.1f}; {time.perf_counter() - started:.1f} s"
    )
    summary = {
        "users": n,
        "auc_global": round(means["global"], 4),
        "auc_local": round(means["local"], 4),
        "auc_coda_nofilter": round(means["coda_nofilter"], 4),
        "auc_coda": round(means["coda"], 4),
        "users_improved_share": round(improved, 4),
        "auc_gain_vs_global_ci95": [round(v, 4) for v in gain_global],
        "auc_gain_vs_local_ci95": [round(v, 4) for v in gain_local],
        "auc_gain_vs_nofilter_ci95": [round(v, 4) for v in gain_filter],
        "users_worsened_share": round(worse, 4),
        **_cache_summary(cache),
        "ann_recall_at_100": round(ann_figures["recall"], 4),
        "ann_p50_ms": round(ann_figures["p50_ms"], 4),
        "ann_exact_p50_ms": round(ann_figures["exact_p50_ms"], 4),
        "ann_pool_size": ann_figures["n"],
        "ann_build_s": round(ann_figures["build_s"], 2),
        "train_ms_median": round(statistics.median(result["seconds"]) * 1000, 2),
        "bytes_down_median": int(statistics.median(result["bytes_down"])),
        "storage_bytes": storage,
        "quick": args.quick,
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
