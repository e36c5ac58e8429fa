"""Cloud model serving throughput and latency against a real `tandem serve` on loopback.

In one run, with the cloud recommendation model from `tandem models build`:

- closed-loop load at concurrency 1, 16 and 64, each request scoring ONE row (a typical
  recommendation call), sent as an .npz body with a device token, against two servers
  started side by side: dynamic micro-batching on, and off;
- limit 1: raw onnxruntime in the bench process, at its best batch size (rows per second,
  i.e. one-row requests per second), configured as the server configures its sessions;
- limit 2: the same server answering its serving no-op, `POST /v1/models/-/noop`, with the
  same device token and the same bodies: authentication, body and HTTP alone, no model
  (`GET /healthz`, through the full framework, is shown beside it).

    python bench/serving.py --quick          # within a minute
    python bench/serving.py                  # longer windows, more repeats
    python bench/serving.py --models DIR     # a build directory (default: .bench_cache/,
                                             # one per version of the models' code, data
                                             # and onnx / onnxruntime)

Every figure is the median of repeated windows, the windows of all figures interleaved so
that background load on a shared machine hits them alike. The last line printed is a JSON
object.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import io
import json
import os
import platform
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import onnx
import onnxruntime as ort
import uvloop

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.light_http import Connection  # noqa: E402
from tests.e2e.live_server import LiveServer  # noqa: E402

ADMIN_TOKEN = "bench-" + secrets.token_urlsafe(24)
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
NPZ = "application/x-npz"
MODEL = "bench-cloud"
DATASET = ROOT.parent / "shared" / "datasets" / "movielens-small"
CONCURRENCY = (1, 16, 64)
RAW_BATCHES = (1, 8, 32, 64, 128, 256)
# Above this share of CPU time stolen by the hypervisor, a run's figures are flagged.
STEAL_WARN = 0.05


@dataclass
class Window:
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int


# -- the model ------------------------------------------------------------------------------


def default_models() -> Path:
    """The bench's own build directory, named by a digest of what the build depends on:
    the code that builds the models, the data set and the onnx / onnxruntime versions. A
    change to any of them (the exported graph, say) gets a build of its own rather than
    the cached one."""
    digest = hashlib.sha256(f"{onnx.__version__} {ort.__version__}".encode())
    sources = sorted((ROOT / "models").glob("*.py")) + sorted(DATASET.glob("*"))
    for source in sources:
        if source.is_file():
            digest.update(source.name.encode() + b"\0" + source.read_bytes())
    return ROOT / ".bench_cache" / f"models-{digest.hexdigest()[:12]}"


def ensure_models(directory: Path) -> Path:
    """The build directory, built with `tandem models build` when it has no cloud model."""
    if (directory / "cloud.onnx").is_file() and (directory / "cards.json").is_file():
        return directory
    print(f"building the models into {directory} (once; later runs reuse it) ...", flush=True)
    directory.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [
            sys.executable,
            *("-m", "cloud.cli", "models", "build"),
            "--data",
            str(DATASET),
            "--out",
            str(directory),
        ],
        check=True,
        cwd=ROOT,
    )
    return directory


def sample_rows(directory: Path, input_names: list[str]) -> list[dict[str, np.ndarray]]:
    """The held-out sample, one dict of one-row arrays per row (the label left out)."""
    with np.load(directory / "cloud.sample.npz", allow_pickle=False) as archive:
        arrays = {name: archive[name] for name in input_names}
    n = len(next(iter(arrays.values())))
    return [{name: a[i : i + 1] for name, a in arrays.items()} for i in range(n)]


def npz(arrays: dict[str, np.ndarray]) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


# -- limit 1: raw onnxruntime ------------------------------------------------------------


class RawOrt:
    """One in-process session, threads as the server sets them: rows per second."""

    def __init__(self, model: bytes, rows: list[dict[str, np.ndarray]]) -> None:
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
        self.rows = rows

    def rows_per_s(self, batch: int, seconds: float) -> float:
        feeds = {
            name: np.concatenate([self.rows[i % len(self.rows)][name] for i in range(batch)])
            for name in self.rows[0]
        }
        self.session.run(None, feeds)
        done, started = 0, time.perf_counter()
        while (elapsed := time.perf_counter() - started) < seconds:
            self.session.run(None, feeds)
            done += batch
        return done / elapsed

    def sweep(self, seconds: float) -> dict[int, float]:
        return {batch: self.rows_per_s(batch, seconds) for batch in RAW_BATCHES}


# -- load against the server -----------------------------------------------------------


async def closed_loop(
    port: int,
    request: tuple[str, str, dict[str, str], list[bytes]],
    concurrency: int,
    seconds: float,
) -> Window:
    method, path, headers, bodies = request
    latencies: list[float] = []
    errors = 0
    stop = time.perf_counter() + seconds

    async def client(offset: int) -> None:
        nonlocal errors
        conn = Connection("127.0.0.1", port)
        i = offset
        try:
            while time.perf_counter() < stop:
                body = bodies[i % len(bodies)] if bodies else b""
                i += concurrency
                sent = time.perf_counter()
                response = await conn.request(method, path, headers=headers, body=body)
                if response.status == 200:
                    latencies.append(time.perf_counter() - sent)
                else:
                    errors += 1
        finally:
            conn.close()

    started = time.perf_counter()
    await asyncio.gather(*(client(k) for k in range(concurrency)))
    elapsed = time.perf_counter() - started
    latencies.sort()
    if not latencies:
        return Window(0.0, float("nan"), float("nan"), errors)
    return Window(
        rps=len(latencies) / elapsed,
        p50_ms=latencies[len(latencies) // 2] * 1000,
        p99_ms=latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] * 1000,
        errors=errors,
    )


def load(closed: Coroutine[Any, Any, Window]) -> Window:
    """Run one window of load on uvloop (as `tandem serve` runs), so that the load
    generator takes less of the shared cores from the server it measures."""
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(closed)


def median_window(windows: list[Window]) -> Window:
    return Window(
        rps=statistics.median(w.rps for w in windows),
        p50_ms=statistics.median(w.p50_ms for w in windows),
        p99_ms=statistics.median(w.p99_ms for w in windows),
        errors=sum(w.errors for w in windows),
    )


def device_token(url: str) -> str:
    """Enroll one device: the bench calls as a device (its token is cached per replica)."""
    key = httpx.post(f"{url}/v1/enrollment-keys", headers=ADMIN, json={}).json()["key"]
    device = httpx.post(
        f"{url}/v1/devices", json={"enrollment_key": key, "attributes": {"platform": "bench"}}
    ).json()
    token: str = device["token"]
    return token


def batch_counts(url: str) -> tuple[float, float]:
    """(onnxruntime calls, requests they served) so far, from the server's metrics."""
    text = httpx.get(f"{url}/metrics").text
    found = {"count": 0.0, "sum": 0.0}
    for line in text.splitlines():
        for kind in found:
            if line.startswith(f"tandem_serving_batch_requests_{kind}{{"):
                found[kind] += float(line.rsplit(" ", 1)[1])
    return found["count"], found["sum"]


def cpu_times() -> tuple[int, int] | None:
    """(steal, total) clock ticks of all CPUs since boot, from /proc/stat; None elsewhere."""
    try:
        fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()
    except OSError:
        return None
    # cpu user nice system idle iowait irq softirq steal ...
    if len(fields) < 9 or fields[0] != "cpu" or not all(f.isdigit() for f in fields[1:9]):
        return None
    ticks = [int(f) for f in fields[1:9]]
    return ticks[7], sum(ticks)


def steal_share(before: tuple[int, int] | None, after: tuple[int, int] | None) -> float | None:
    """The share of the CPUs' time (idle included) the hypervisor gave to other guests
    between the two readings. The bench keeps the cores busy, so the machine it measured
    was about that much smaller than it looked."""
    if before is None or after is None or after[1] <= before[1]:
        return None
    return (after[0] - before[0]) / (after[1] - before[1])


def process_cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass
class Target:
    """One running server under test and the requests the bench sends it."""

    name: str
    server: LiveServer
    infer: tuple[str, str, dict[str, str], list[bytes]]
    noop: tuple[str, str, dict[str, str], list[bytes]]


def start_server(
    model: bytes, bodies: list[bytes], *, batching: bool, args: argparse.Namespace, root: Path
) -> Target:
    env = {
        "TANDEM_ADMIN_TOKEN": ADMIN_TOKEN,
        "TANDEM_LOG_REQUESTS": "false",
        "TANDEM_SERVING_BATCHING": "true" if batching else "false",
        "TANDEM_SERVING_MAX_BATCH": str(args.max_batch),
    }
    if args.max_delay_ms is not None:
        env["TANDEM_SERVING_MAX_DELAY_MS"] = str(args.max_delay_ms)
    name = "batched" if batching else "unbatched"
    server = LiveServer(root / name / "data", env=env).start()
    upload = httpx.post(
        f"{server.url}/v1/models",
        headers=ADMIN,
        data={"name": MODEL, "target": "cloud"},
        files={"file": ("cloud.onnx", model, "application/octet-stream")},
        timeout=60,
    )
    upload.raise_for_status()
    token = device_token(server.url)
    headers = {"Authorization": f"Bearer {token}", "Content-Type": NPZ, "Accept": NPZ}
    target = Target(
        name,
        server,
        ("POST", f"/v1/models/{MODEL}/infer", headers, bodies),
        ("POST", "/v1/models/-/noop", headers, bodies),
    )
    # Loads and warms the model, and warms the server's code paths.
    load(closed_loop(server.port, target.infer, 8, 1.0))
    return target


def measure(targets: list[Target], raw: Any, args: argparse.Namespace) -> dict[str, Any]:
    """Every figure, its windows interleaved: each repeat measures every server, limit and
    concurrency once, so a busy spell on the machine hits all of them alike."""
    windows: dict[str, list[Window]] = {}
    raw_runs: list[float] = []
    calls: dict[str, list[float]] = {}
    cpu: dict[str, tuple[float, float]] = {}
    batched = targets[0]
    healthz = ("GET", "/healthz", {}, [])
    for _ in range(args.repeats):
        for concurrency in CONCURRENCY:
            for target in targets:
                process = target.server.process
                assert process is not None
                before = batch_counts(target.server.url)
                used = process_cpu_s(process.pid), time.process_time()
                window = load(
                    closed_loop(target.server.port, target.infer, concurrency, args.seconds)
                )
                windows.setdefault(f"{target.name}_c{concurrency}", []).append(window)
                after = batch_counts(target.server.url)
                per_call = (after[1] - before[1]) / max(after[0] - before[0], 1)
                calls.setdefault(f"{target.name}_c{concurrency}", []).append(per_call)
                cpu[f"{target.name}_c{concurrency}"] = (
                    process_cpu_s(process.pid) - used[0],
                    time.process_time() - used[1],
                )
        for key, request in (("noop", batched.noop), ("healthz", healthz)):
            windows.setdefault(key, []).append(
                load(closed_loop(batched.server.port, request, 64, args.seconds))
            )
        raw_runs.append(raw())
    results: dict[str, Any] = {key: median_window(w) for key, w in windows.items()}
    results |= {f"{key}_per_call": statistics.median(v) for key, v in calls.items()}
    results |= {f"{key}_cpu": v for key, v in cpu.items()}
    results["raw"] = statistics.median(raw_runs)
    return results


# -- report --------------------------------------------------------------------------------


def auc(cards: dict[str, Any], model: str) -> float | None:
    card = cards.get(model)
    if card is None:
        return None
    value = card.get("auc", card.get("metrics", {}).get("auc"))
    return None if value is None else float(value)


def machine() -> str:
    return f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="Short windows: within a minute.")
    parser.add_argument(
        "--models",
        type=Path,
        default=None,
        help="A build directory (default: one under .bench_cache/ per version of the models' "
        "code, data and onnx / onnxruntime, built when missing).",
    )
    parser.add_argument("--seconds", type=float, default=None, help="Length of each window.")
    parser.add_argument("--repeats", type=int, default=None, help="Windows per figure.")
    parser.add_argument("--max-batch", type=int, default=64)
    parser.add_argument(
        "--max-delay-ms",
        type=float,
        default=None,
        help="TANDEM_SERVING_MAX_DELAY_MS (default: the server's)",
    )
    args = parser.parse_args()
    args.seconds = args.seconds or (1.2 if args.quick else 5.0)
    args.repeats = args.repeats or (3 if args.quick else 5)

    directory = ensure_models(args.models or default_models())
    cards = json.loads((directory / "cards.json").read_text())
    model = (directory / "cloud.onnx").read_bytes()
    inputs = [i.name for i in ort.InferenceSession(model).get_inputs()]
    rows = sample_rows(directory, inputs)
    bodies = [npz(row) for row in rows]

    raw_ort = RawOrt(model, rows)
    sweep = raw_ort.sweep(0.3 if args.quick else 1.0)
    best_batch = max(sweep, key=lambda b: sweep[b])
    with tempfile.TemporaryDirectory(prefix="tandem-bench-serving-") as tmp:
        targets = []
        try:
            for batching in (True, False):
                targets.append(
                    start_server(model, bodies, batching=batching, args=args, root=Path(tmp))
                )
            before = cpu_times()
            results = measure(
                targets, lambda: raw_ort.rows_per_s(best_batch, min(args.seconds, 1.0)), args
            )
            steal = steal_share(before, cpu_times())
        finally:
            for target in targets:
                target.server.stop()

    noop: Window = results["noop"]
    raw_rps: float = results["raw"]
    limit = min(raw_rps, noop.rps)
    b64, u64 = results["batched_c64"], results["unbatched_c64"]
    print()
    print(f"Cloud model serving, one row per request, .npz bodies ({machine()}).")
    print("Two servers (batching on / off), each 1 process: event loop + 1 onnxruntime")
    print("thread; 1 load-generator process; all share the cores, and the machine with")
    print(
        f"whatever else runs. Medians of {args.repeats} windows of {args.seconds:g} s, the windows"
    )
    print("of all figures interleaved, so background load hits them alike.")
    print()
    print(
        f"{'concurrency':>11}  {'batched rps':>11} {'p50 ms':>7} {'p99 ms':>7}   "
        f"{'unbatched rps':>13} {'p50 ms':>7} {'p99 ms':>7}   {'ratio':>5}  {'req/call':>8}"
    )
    for c in CONCURRENCY:
        b, u = results[f"batched_c{c}"], results[f"unbatched_c{c}"]
        print(
            f"{c:>11}  {b.rps:>11.0f} {b.p50_ms:>7.2f} {b.p99_ms:>7.2f}   "
            f"{u.rps:>13.0f} {u.p50_ms:>7.2f} {u.p99_ms:>7.2f}   {b.rps / u.rps:>5.2f}  "
            f"{results[f'batched_c{c}_per_call']:>8.1f}"
        )
    print("(req/call: requests merged into each onnxruntime call, batched server)")
    print()
    raw_line = ", ".join(f"{b}: {r:,.0f}" for b, r in sweep.items())
    print(f"raw onnxruntime rows/s by batch size: {raw_line}")
    print(f"limit 1, raw onnxruntime at batch {best_batch}: {raw_rps:,.0f} rows/s")
    print(
        f"limit 2, same server, POST /v1/models/-/noop at c64: {noop.rps:,.0f} rps "
        f"(GET /healthz: {results['healthz'].rps:,.0f} rps)"
    )
    print(f"batched c64 / lesser limit: {b64.rps / limit:.0%}   (target >= 50 %)")
    print(f"batched / unbatched at c64: {b64.rps / u64.rps:.2f}x   (target >= 3x)")
    print(
        f"p99 at c64, batched: {b64.p99_ms:.1f} ms   (target <= 50 ms; the no-op's own p50 / "
        f"p99 at c64, the floor on this machine now: {noop.p50_ms:.1f} / {noop.p99_ms:.1f} ms)"
    )
    cpu_s, cpu_c = results["batched_c64_cpu"]
    print(
        f"CPU in the last c64 window (batched): server {cpu_s:.1f} s, load generator {cpu_c:.1f} s"
    )
    aucs = {name: auc(cards, name) for name in ("edge", "edge_int8", "cloud")}
    print("held-out AUC: " + ", ".join(f"{k} {v:.4f}" for k, v in aucs.items() if v is not None))
    if steal is not None:
        print(
            f"CPU time taken by the hypervisor for other guests during the run (steal): {steal:.1%}"
        )
        if steal > STEAL_WARN:
            print(
                "WARNING: other guests took a measurable share of the machine during this run; "
                "its figures understate the server. Run again when steal is low."
            )
    errors = sum(w.errors for w in results.values() if isinstance(w, Window))
    if errors:
        print(f"WARNING: {errors} requests did not answer 200")
    print(
        json.dumps(
            {
                "batched_rps_c64": round(b64.rps, 1),
                "unbatched_rps_c64": round(u64.rps, 1),
                "raw_ort_rps": round(raw_rps, 1),
                "raw_ort_best_batch": best_batch,
                "noop_rps": round(noop.rps, 1),
                "noop_p99_ms_c64": round(noop.p99_ms, 2),
                "healthz_rps": round(results["healthz"].rps, 1),
                "p50_ms_c64": round(b64.p50_ms, 2),
                "p99_ms_c64": round(b64.p99_ms, 2),
                "batched_rps_c1": round(results["batched_c1"].rps, 1),
                "batched_rps_c16": round(results["batched_c16"].rps, 1),
                "unbatched_rps_c1": round(results["unbatched_c1"].rps, 1),
                "unbatched_rps_c16": round(results["unbatched_c16"].rps, 1),
                "unbatched_p99_ms_c64": round(u64.p99_ms, 2),
                "requests_per_call_c64": round(results["batched_c64_per_call"], 1),
                "batched_over_unbatched_c64": round(b64.rps / u64.rps, 2),
                "batched_over_limit": round(b64.rps / limit, 3),
                "edge_auc": aucs["edge"],
                "edge_int8_auc": aucs["edge_int8"],
                "cloud_auc": aucs["cloud"],
                "errors": errors,
                "steal": None if steal is None else round(steal, 4),
                "machine": machine(),
            }
        )
    )


if __name__ == "__main__":
    main()
