"""The edge/cloud router on RouteLLM's MMLU data, end to end through a real `tandem serve`.

Data: `../shared/datasets/routellm-mmlu/` (which MMLU questions Mixtral-8x7B, the edge,
and GPT-4, the cloud, answered correctly), contaminated prompts dropped. Each prompt goes
to the training or the held-out half by a hash of its text. One metric: correctness.

In one run the bench starts a server, creates a router with budget 0.3, logs the training
half as observations, trains a version, then routes the held-out half, shuffled, through
`POST /v1/route` in batches, and measures:

- quality vs cost on the held-out half, for our router (its PRS), a random router and
  the oracle: the share of cloud calls needed to reach 95 % of the large model's accuracy,
  dP at a 50 % cloud share (the fraction of the small-large accuracy gap recovered), and
  the area under that gap-recovered curve (APGR);
- the budget controller: its decisions on that shuffled stream, and the largest cloud
  share over any window of 1,000 consecutive requests;
- decisions through REST per second (batches of 100, key tokens included);
- decision latency on the device: the exported ONNX router in `device_sdk.EdgeRouter`
  (featurize + onnxruntime + controller), one request at a time over the shuffled
  held-out texts, p50 and p99 of wall time (the median over rounds), and the p99 of the
  thread's CPU time, which leaves out the time other processes held the cores.

The regularisation is chosen by 2-fold cross-validation on the training half only (no
held-out label is read before the final scoring); `--quick` uses the default instead and
routes a sample of the held-out stream for the latency figure.

    python bench/router_eval.py --quick     # within a minute
    python bench/router_eval.py

The last line printed is a JSON object.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import os
import platform
import random
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from cloud.router.featurize import make_batch  # noqa: E402
from cloud.router.training import TrainingOptions, fit  # noqa: E402
from device_sdk import EdgeRouter  # noqa: E402
from device_sdk.router_wire import RouterExport  # noqa: E402
from device_sdk.text_features import FeatureSpec  # noqa: E402
from tests.e2e.live_server import LiveServer  # noqa: E402

DATA = ROOT.parent / "shared" / "datasets" / "routellm-mmlu"
ADMIN_TOKEN = "bench-admin-token-0123456789abcdef"  # noqa: S105  # a throwaway local server
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
SMALL, LARGE = "mistralai/Mixtral-8x7B-Instruct-v0.1", "gpt-4-1106-preview"
# RouteLLM (Ong et al., 2024), MMLU, best router: about 45 % cost saving at 95 % of
# GPT-4's quality, i.e. GPT-4 on about 55 % of the questions.
ROUTELLM_STRONG_SHARE_AT_95 = 0.55
L2_GRID = (1e-5, 3e-5, 1e-4)


@dataclass(frozen=True)
class Question:
    prompt: str
    small: bool
    large: bool


def load(root: Path) -> list[Question]:
    """Every question of every subject, the contaminated prompts dropped."""
    contaminated: set[str] = set()
    for line in (root / "contaminated_prompts.jsonl").read_text().splitlines():
        record = json.loads(line)
        contaminated.update(v for v in record.values() if isinstance(v, str))
    questions = []
    for path in sorted(root.glob("mmlu_*.csv")):
        with path.open(newline="") as file:
            for row in csv.DictReader(file):
                if row["prompt"] not in contaminated:
                    questions.append(
                        Question(row["prompt"], row[SMALL] == "True", row[LARGE] == "True")
                    )
    return questions


def held_out(prompt: str) -> bool:
    return hashlib.sha256(prompt.encode()).digest()[0] % 2 == 1


# --- quality vs cost ------------------------------------------------------------------


def accuracy_curve(order: np.ndarray, small: np.ndarray, large: np.ndarray) -> np.ndarray:
    """Accuracy when the first k questions of ``order`` go to the cloud, k = 0..n."""
    gain = (large.astype(float) - small.astype(float))[order]
    curve: np.ndarray = small.mean() + np.concatenate([[0.0], np.cumsum(gain)]) / len(small)
    return curve


def summarize(curve: np.ndarray, small: np.ndarray, large: np.ndarray) -> dict[str, float]:
    n = len(small)
    s, big = small.mean(), large.mean()
    reached = np.nonzero(curve >= 0.95 * big - 1e-12)[0]
    gap = big - s
    recovered = (curve - s) / gap
    return {
        "strong_share_at_95": float(reached[0] / n) if reached.size else 1.0,
        "delta_p_at_50": float(recovered[n // 2]),
        "apgr": float(np.mean((recovered[1:] + recovered[:-1]) / 2)),
    }


def random_router(small: np.ndarray, large: np.ndarray, seeds: int = 20) -> dict[str, float]:
    rows = [
        summarize(
            accuracy_curve(np.random.default_rng(s).permutation(len(small)), small, large),
            small,
            large,
        )
        for s in range(seeds)
    ]
    return {k: statistics.mean(r[k] for r in rows) for k in rows[0]}


def choose_l2(
    train: list[Question], spec: FeatureSpec, epochs: int
) -> tuple[float, dict[float, float]]:
    """The L2 weight with the best 2-fold APGR on the training half."""
    folds = [[q for i, q in enumerate(train) if i % 2 == f] for f in (0, 1)]
    scores: dict[float, float] = {}
    for l2 in L2_GRID:
        apgrs = []
        for f in (0, 1):
            fitted, scored = folds[f], folds[1 - f]
            batch = make_batch(
                [q.prompt for q in fitted], [None] * len(fitted), spec=spec, n_features=0
            )
            y = np.array([[float(q.small >= q.large)] for q in fitted])
            model, _ = fit(
                batch,
                y,
                spec=spec,
                metric_weights=np.ones(1),
                options=TrainingOptions(l2=l2, epochs=epochs),
            )
            test = make_batch(
                [q.prompt for q in scored], [None] * len(scored), spec=spec, n_features=0
            )
            prs = model.predict(test).prs
            small = np.array([q.small for q in scored])
            large = np.array([q.large for q in scored])
            apgrs.append(
                summarize(
                    accuracy_curve(np.argsort(prs, kind="stable"), small, large), small, large
                )["apgr"]
            )
        scores[l2] = statistics.mean(apgrs)
    return max(scores, key=lambda k: scores[k]), scores


# --- the run ----------------------------------------------------------------------------


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


def machine() -> str:
    return f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"


def run(args: argparse.Namespace) -> dict[str, Any]:
    questions = load(args.data)
    train = [q for q in questions if not held_out(q.prompt)]
    test = [q for q in questions if held_out(q.prompt)]
    spec = FeatureSpec(dim=args.dim)
    started = time.perf_counter()
    if args.quick:
        l2, cv = 3e-5, dict[float, float]()
    else:
        l2, cv = choose_l2(train, spec, args.epochs)
    cv_s = time.perf_counter() - started
    stream = list(range(len(test)))
    random.Random(args.seed).shuffle(stream)

    with tempfile.TemporaryDirectory() as tmp:
        env = {"TANDEM_ADMIN_TOKEN": ADMIN_TOKEN, "TANDEM_LOG_REQUESTS": "false"}
        server = LiveServer(Path(tmp) / "data", env=env).start()
        try:
            with httpx.Client(base_url=server.url, headers=ADMIN, timeout=300) as http:
                http.post(
                    "/v1/routers",
                    json={
                        "name": "mmlu",
                        "metrics": [{"name": "correct", "weight": 1.0}],
                        "budget": args.budget,
                        "window": args.window,
                        "feature_spec": spec.model_dump(),
                    },
                ).raise_for_status()
                for i in range(0, len(train), 1000):
                    items = [
                        {
                            "text": q.prompt,
                            "edge": {"correct": float(q.small)},
                            "cloud": {"correct": float(q.large)},
                        }
                        for q in train[i : i + 1000]
                    ]
                    http.post(
                        "/v1/routers/mmlu/observations", json={"items": items}
                    ).raise_for_status()
                t0 = time.perf_counter()
                trained = http.post(
                    "/v1/routers/mmlu/train", json={"l2": l2, "epochs": args.epochs}
                )
                trained.raise_for_status()
                train_s = time.perf_counter() - t0

                prs = np.zeros(len(test))
                targets: list[bool] = []
                rates = []
                for _ in range(args.passes):
                    t0 = time.perf_counter()
                    for i in range(0, len(stream), args.batch):
                        chunk = stream[i : i + args.batch]
                        answer = http.post(
                            "/v1/route",
                            json={
                                "router": "mmlu",
                                "items": [{"text": test[j].prompt} for j in chunk],
                            },
                        )
                        answer.raise_for_status()
                        for j, item in zip(chunk, answer.json()["items"], strict=True):
                            prs[j] = item["prs"]
                            targets.append(item["target"] == "cloud")
                    rates.append(len(stream) / (time.perf_counter() - t0))

                export = RouterExport.model_validate(http.get("/v1/routers/mmlu/export").json())
                onnx_bytes = http.get(export.download_url).content
                stats = http.get("/v1/routers/mmlu").json()["stats"]
        finally:
            server.stop()

    small = np.array([q.small for q in test])
    large = np.array([q.large for q in test])
    ours = summarize(accuracy_curve(np.argsort(prs, kind="stable"), small, large), small, large)
    rand = random_router(small, large)
    oracle_order = np.argsort(-(large.astype(int) - small.astype(int)), kind="stable")
    oracle = summarize(accuracy_curve(oracle_order, small, large), small, large)

    cloud = np.array(targets, dtype=np.int64)
    sums = np.convolve(cloud, np.ones(args.window, dtype=np.int64), mode="valid")
    max_window_share = float(sums.max() / args.window) if sums.size else float(cloud.mean())

    router = EdgeRouter(export, onnx_bytes)
    sample = stream[: args.latency_requests]
    device_prs = np.array([float(router.score([test[j].prompt])[1][0]) for j in sample[:500]])
    parity = float(np.max(np.abs(device_prs - prs[sample[:500]])))
    wall_p99, cpu_p99, wall_p50 = [], [], []
    for _ in range(args.rounds):
        wall, cpu = [], []
        for j in sample:
            w0, c0 = time.perf_counter(), time.thread_time()
            router.decide(test[j].prompt)
            cpu.append((time.thread_time() - c0) * 1000)
            wall.append((time.perf_counter() - w0) * 1000)
        wall_p50.append(percentile(wall, 50))
        wall_p99.append(percentile(wall, 99))
        cpu_p99.append(percentile(cpu, 99))

    return {
        "train_questions": len(train),
        "held_out_questions": len(test),
        "small_accuracy": float(small.mean()),
        "large_accuracy": float(large.mean()),
        "ours": ours,
        "random": rand,
        "oracle": oracle,
        "l2": l2,
        "cv_apgr": {str(k): round(v, 4) for k, v in cv.items()},
        "cv_s": cv_s,
        "train_s": train_s,
        "budget": args.budget,
        "window": args.window,
        "budget_max_window_share": max_window_share,
        "budget_mean_share": float(cloud.mean()),
        "stats_share": stats["share"],
        "rest_decisions_per_s": statistics.median(rates),
        "rest_batch": args.batch,
        "device_route_p50_ms": statistics.median(wall_p50),
        "device_route_p99_ms": statistics.median(wall_p99),
        "device_route_cpu_p99_ms": statistics.median(cpu_p99),
        "device_route_p99_rounds": [round(v, 3) for v in wall_p99],
        "device_vs_rest_max_prs_diff": parity,
    }


def _row(cells: list[str], widths: list[int]) -> str:
    return (
        "| "
        + " | ".join(
            c.rjust(w) if i else c.ljust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        )
        + " |"
    )


def _rule(widths: list[int]) -> str:
    return "|" + "|".join("-" * (w + 2) for w in widths) + "|"


def table(r: dict[str, Any]) -> str:
    ours, rand, oracle = r["ours"], r["random"], r["oracle"]
    anchor = f"RouteLLM ~{ROUTELLM_STRONG_SHARE_AT_95:.2f}"
    quality = [
        ("cloud share for 95 % of large acc.", "strong_share_at_95", anchor, "<= 0.50"),
        ("dP at 50 % cloud share", "delta_p_at_50", "", ">= 0.70"),
        ("APGR", "apgr", "", ""),
    ]
    widths = [36, 6, 6, 6, 17, 15, 7]
    header = ["metric", "ours", "random", "oracle", "ratio ours/random", "anchor", "target"]
    lines = [
        f"machine: {machine()}",
        f"held-out questions: {r['held_out_questions']} (trained on {r['train_questions']}); "
        f"small acc {r['small_accuracy']:.3f}, large acc {r['large_accuracy']:.3f}; "
        f"l2 {r['l2']:g} (2-fold CV APGR on the training half: "
        f"{r['cv_apgr'] or 'skipped in --quick'})",
        "",
        _row(header, widths),
        _rule(widths),
    ]
    for name, key, peer, target in quality:
        a, b, c = ours[key], rand[key], oracle[key]
        cells = [name, f"{a:.3f}", f"{b:.3f}", f"{c:.3f}", f"{a / b:.2f}", peer, target]
        lines.append(_row(cells, widths))
    widths = [36, 29, 8]
    budget = r["budget"]
    measured = [
        (
            "max cloud share, any 1,000-window",
            f"{r['budget_max_window_share']:.3f}",
            f"{budget + 0.01:.3f}",
        ),
        ("mean cloud share over the stream", f"{r['budget_mean_share']:.3f}", f"{budget:.3f}"),
        ("device decision p50 (ms, ONNX)", f"{r['device_route_p50_ms']:.3f}", ""),
        ("device decision p99 (ms, ONNX)", f"{r['device_route_p99_ms']:.3f}", "1.000"),
        ("device decision p99, thread CPU (ms)", f"{r['device_route_cpu_p99_ms']:.3f}", "1.000"),
        (
            "device p99 per round (ms)",
            " ".join(f"{v:.2f}" for v in r["device_route_p99_rounds"]),
            "",
        ),
        ("device vs REST PRS, max abs diff", f"{r['device_vs_rest_max_prs_diff']:.1e}", ""),
        (f"REST decisions/s (batch {r['rest_batch']})", f"{r['rest_decisions_per_s']:.0f}", ""),
        ("training through REST (s)", f"{r['train_s']:.1f}", ""),
    ]
    lines += ["", _row(["budget controller / latency", "ours", "limit"], widths), _rule(widths)]
    lines += [_row(list(m), widths) for m in measured]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="default l2, fewer latency samples")
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--budget", type=float, default=0.3)
    parser.add_argument("--window", type=int, default=1000)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--dim", type=int, default=2**18)
    parser.add_argument("--epochs", type=int, default=300)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    if not args.data.is_dir():
        sys.exit(f"{args.data} is missing: the bench needs ../shared/datasets/routellm-mmlu/.")
    args.passes = 1 if args.quick else 3
    args.latency_requests = 2000 if args.quick else 7000
    args.rounds = 3 if args.quick else 5
    result = run(args)
    print(table(result))
    summary = {
        "strong_share_at_95": round(result["ours"]["strong_share_at_95"], 4),
        "random_strong_share_at_95": round(result["random"]["strong_share_at_95"], 4),
        "oracle_strong_share_at_95": round(result["oracle"]["strong_share_at_95"], 4),
        "delta_p_at_50": round(result["ours"]["delta_p_at_50"], 4),
        "apgr": round(result["ours"]["apgr"], 4),
        "random_apgr": round(result["random"]["apgr"], 4),
        "budget": result["budget"],
        "budget_max_window_share": round(result["budget_max_window_share"], 4),
        "device_route_p99_ms": round(result["device_route_p99_ms"], 4),
        "device_route_cpu_p99_ms": round(result["device_route_cpu_p99_ms"], 4),
        "rest_decisions_per_s": round(result["rest_decisions_per_s"], 1),
        "machine": machine(),
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
