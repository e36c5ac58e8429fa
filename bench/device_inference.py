"""On-device inference: `Device.predict` against raw `onnxruntime.InferenceSession.run`.

A real installed device, without a server: the bench builds task bundles, signs them with
a throwaway Ed25519 key, installs them with the SDK's own installer into a temporary data
directory, and calls `Device.predict` on a device that is never started (installed tasks
run whether or not the cloud is reachable). The peer is a plain `InferenceSession` on the
same model bytes with the same session options (one intra-op thread, full optimisation).

In one run, single thread, medians over thousands of calls, raw and SDK calls interleaved
in blocks so that the machine's drift hits both alike:

- a tiny MLP (64-256-128-8, batch 1, about 20 us raw): the SDK's fixed cost per call;
- an edge-size ranker (128-256-256-1 scoring 32 candidates, about 100 us raw), standing in
  for the edge recommendation model until `models/` has it: the SDK's relative cost;
- two tasks with entries (`main.py` calling a model of about 2 ms) run concurrently from
  two app threads, against the same calls one at a time: throughput ratio. Raw
  `session.run` from two threads, measured the same way, shows the machine's ceiling at
  that moment (other processes eat into it).

    python bench/device_inference.py --quick      # within a minute
    python bench/device_inference.py              # more calls and rounds

Each figure is the median of several rounds. The last line printed is a JSON object.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import itertools
import json
import os
import platform
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from onnx import TensorProto, helper, numpy_helper

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from device_sdk import Device, DeviceStore, Installer  # noqa: E402
from device_sdk import bundle as bundle_format  # noqa: E402
from device_sdk.wire import DesiredTask, FileDigest, TaskManifest  # noqa: E402

TINY = ([64, 256, 128, 8], 1)
EDGE = ([128, 256, 256, 1], 32)
HEAVY = ([256] * 6, 256)
ENTRY = b"def run(ctx, inputs):\n    return ctx.model('mlp').run(inputs)\n"


def mlp(sizes: list[int], seed: int = 0) -> bytes:
    """An ONNX MLP (Gemm + Relu layers) with a symbolic batch dimension."""
    rng = np.random.default_rng(seed)
    nodes, weights, previous = [], [], "x"
    for i, (n_in, n_out) in enumerate(itertools.pairwise(sizes)):
        w = rng.standard_normal((n_in, n_out)).astype(np.float32) / np.float32(np.sqrt(n_in))
        weights += [
            numpy_helper.from_array(w, f"W{i}"),
            numpy_helper.from_array(np.zeros(n_out, np.float32), f"b{i}"),
        ]
        last = i == len(sizes) - 2
        output = "y" if last else f"h{i}"
        nodes.append(helper.make_node("Gemm", [previous, f"W{i}", f"b{i}"], [output]))
        if not last:
            nodes.append(helper.make_node("Relu", [output], [f"r{i}"]))
            previous = f"r{i}"
    graph = helper.make_graph(
        nodes,
        "mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", sizes[0]])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", sizes[-1]])],
        weights,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model.SerializeToString()


class Fleet:
    """One device's data directory with tasks installed from bundles signed here."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.key = Ed25519PrivateKey.generate()
        raw = self.key.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
        self.public_key = base64.b64encode(raw).decode()
        self.store = DeviceStore(data_dir / "device.db")
        self.installer = Installer(data_dir, self.store)

    def install(self, name: str, model: bytes, *, entry: bool = False) -> None:
        files = {"model.onnx": model, **({"main.py": ENTRY} if entry else {})}
        manifest = TaskManifest(
            name=name,
            version=1,
            entry="main.py" if entry else None,
            models=[{"name": "mlp", "file": "model.onnx"}],
            resources={"timeout_ms": 60_000, "max_concurrency": 2},
            files={
                n: FileDigest(sha256=hashlib.sha256(d).hexdigest(), size=len(d))
                for n, d in files.items()
            },
        )
        data = bundle_format.build(manifest, files)
        task = DesiredTask(
            name=name,
            version=1,
            deployment_id=1,
            bundle_sha256=hashlib.sha256(data).hexdigest(),
            bundle_size=len(data),
            manifest=manifest,
            signature=base64.b64encode(self.key.sign(manifest.canonical_bytes())).decode(),
        )
        self.installer.install(task, data, public_key=self.public_key)

    def close(self) -> None:
        self.store.close()


def raw_session(model: bytes) -> Any:
    """The peer: a plain session with the options the SDK's runner uses."""
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
    return onnxruntime.InferenceSession(model, options, providers=["CPUExecutionProvider"])


def interleaved(
    ours: Callable[[], object], peer: Callable[[], object], calls: int, block: int = 250
) -> tuple[float, float]:
    """Median seconds per call of ``ours`` and ``peer``, timed call by call in
    alternating blocks."""
    clock = time.perf_counter_ns
    times: dict[str, list[int]] = {"ours": [], "peer": []}
    for _ in range(max(1, calls // block)):
        for label, call in (("ours", ours), ("peer", peer)):
            bucket = times[label]
            for _ in range(block):
                started = clock()
                call()
                bucket.append(clock() - started)
    return statistics.median(times["ours"]) / 1e9, statistics.median(times["peer"]) / 1e9


def both_ways(
    calls: tuple[Callable[[], object], Callable[[], object]], per_thread: int, segment: int = 20
) -> tuple[float, float]:
    """Calls per second of two call streams run concurrently (one app thread each) and
    one at a time (alternating in one thread), measured in alternating segments of
    ``segment`` calls per stream so that the machine's drift hits both alike."""
    spent = {"concurrent": 0.0, "sequential": 0.0}

    def stream(call: Callable[[], object], barrier: threading.Barrier) -> None:
        barrier.wait()
        for _ in range(segment):
            call()

    for _ in range(max(1, per_thread // segment)):
        began = time.perf_counter()
        for _ in range(segment):
            for call in calls:
                call()
        spent["sequential"] += time.perf_counter() - began
        barrier = threading.Barrier(len(calls) + 1)
        threads = [threading.Thread(target=stream, args=(call, barrier)) for call in calls]
        for thread in threads:
            thread.start()
        barrier.wait()
        began = time.perf_counter()
        for thread in threads:
            thread.join()
        spent["concurrent"] += time.perf_counter() - began
    total = len(calls) * segment * max(1, per_thread // segment)
    return total / spent["concurrent"], total / spent["sequential"]


def run(args: argparse.Namespace) -> dict[str, Any]:
    rng = np.random.default_rng(1)
    models = {name: mlp(sizes) for name, (sizes, _) in [("tiny", TINY), ("edge", EDGE)]}
    heavy = mlp(HEAVY[0], seed=2)
    feeds = {
        name: {"x": rng.standard_normal((batch, sizes[0])).astype(np.float32)}
        for name, (sizes, batch) in [("tiny", TINY), ("edge", EDGE), ("heavy", HEAVY)]
    }
    with tempfile.TemporaryDirectory() as tmp:
        fleet = Fleet(Path(tmp) / "device")
        fleet.install("tiny", models["tiny"])
        fleet.install("edge", models["edge"])
        fleet.install("heavy-a", heavy, entry=True)
        fleet.install("heavy-b", heavy, entry=True)
        fleet.close()
        device = Device(
            "http://127.0.0.1:9", enrollment_key="unused", data_dir=Path(tmp) / "device"
        )
        raws = {name: raw_session(model) for name, model in models.items()}
        rounds: dict[str, list[tuple[float, float]]] = {"tiny": [], "edge": []}
        speedups: list[tuple[float, float]] = []
        ceilings: list[tuple[float, float]] = []
        heavy_raw = raw_session(heavy)
        for name in ("tiny", "edge", "heavy-a", "heavy-b"):  # first use: load + warm-up
            device.predict(name, feeds["heavy" if name.startswith("heavy") else name])
        for name, session in raws.items():
            for _ in range(50):
                session.run(None, feeds[name])
        for _ in range(args.rounds):
            for name, session in raws.items():
                feed = feeds[name]
                rounds[name].append(
                    interleaved(
                        partial(device.predict, name, feed),
                        partial(session.run, None, feed),
                        args.calls,
                    )
                )
            heavy_feed = feeds["heavy"]
            tasks = (
                partial(device.predict, "heavy-a", heavy_feed),
                partial(device.predict, "heavy-b", heavy_feed),
            )
            speedups.append(both_ways(tasks, args.heavy_calls))
            # The machine's ceiling right now: raw session.run from two threads.
            raw_calls = (partial(heavy_raw.run, None, heavy_feed),) * 2
            ceilings.append(both_ways(raw_calls, args.heavy_calls // 2))
        device.stop()

    def med(values: list[float]) -> float:
        return statistics.median(values)

    tiny_sdk, tiny_raw = (med([r[i] for r in rounds["tiny"]]) * 1e6 for i in (0, 1))
    edge_sdk, edge_raw = (med([r[i] for r in rounds["edge"]]) * 1e6 for i in (0, 1))
    return {
        "overhead_ratio_p50": round(med([s / r for s, r in rounds["edge"]]), 3),
        "overhead_us_p50": round(med([(s - r) * 1e6 for s, r in rounds["tiny"]]), 2),
        "concurrency_speedup": round(med([two / one for two, one in speedups]), 3),
        "tiny_sdk_us_p50": round(tiny_sdk, 2),
        "tiny_raw_us_p50": round(tiny_raw, 2),
        "edge_sdk_us_p50": round(edge_sdk, 2),
        "edge_raw_us_p50": round(edge_raw, 2),
        "concurrent_calls_per_s": round(med([two for two, _ in speedups]), 1),
        "sequential_calls_per_s": round(med([one for _, one in speedups]), 1),
        "heavy_ms_per_call": round(1000 / med([one for _, one in speedups]), 2),
        "raw_concurrency_speedup": round(med([two / one for two, one in ceilings]), 3),
        "raw_concurrent_calls_per_s": round(med([two for two, _ in ceilings]), 1),
        "raw_sequential_calls_per_s": round(med([one for _, one in ceilings]), 1),
        "per_round": {
            "overhead_us": [round((s - r) * 1e6, 2) for s, r in rounds["tiny"]],
            "overhead_ratio": [round(s / r, 3) for s, r in rounds["edge"]],
            "concurrency_speedup": [round(two / one, 3) for two, one in speedups],
            "raw_concurrency_speedup": [round(two / one, 3) for two, one in ceilings],
        },
        "load_average_1m": round(os.getloadavg()[0], 2),
        "rounds": args.rounds,
        "calls_per_round": args.calls,
        "machine": machine(),
    }


def machine() -> str:
    return (
        f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
        f"onnxruntime {onnxruntime.__version__}"
    )


def print_table(r: dict[str, Any]) -> None:
    print(
        f"\nDevice inference: medians of {r['rounds']} rounds x {r['calls_per_round']} calls "
        f"per model, single thread; {r['machine']}"
    )
    print(f"{'metric':44} {'ours':>10} {'peer':>10} {'ratio':>7} {'ours-peer':>10} {'target':>9}")
    rows = [
        (
            "tiny MLP p50 (us): predict vs session.run",
            r["tiny_sdk_us_p50"],
            r["tiny_raw_us_p50"],
            f"{r['overhead_us_p50']:.2f}",
            "<= 15 us",
        ),
        (
            "edge ranker p50 (us): predict vs session.run",
            r["edge_sdk_us_p50"],
            r["edge_raw_us_p50"],
            "-",
            "<= 1.10",
        ),
        (
            "2 entry tasks (calls/s): concurrent vs 1-by-1",
            r["concurrent_calls_per_s"],
            r["sequential_calls_per_s"],
            "-",
            ">= 1.6",
        ),
        (
            "ceiling: raw run, 2 threads vs 1-by-1",
            r["raw_concurrent_calls_per_s"],
            r["raw_sequential_calls_per_s"],
            "-",
            "-",
        ),
    ]
    ratios = [r["tiny_sdk_us_p50"] / r["tiny_raw_us_p50"], r["overhead_ratio_p50"]]
    ratios += [r["concurrency_speedup"], r["raw_concurrency_speedup"]]
    for (name, ours, peer, diff, target), ratio in zip(rows, ratios, strict=True):
        print(f"{name:44} {ours:>10} {peer:>10} {ratio:>7.3f} {diff:>10} {target:>9}")
    print(
        f"model of the concurrency test: {r['heavy_ms_per_call']} ms per call through predict; "
        f"load average {r['load_average_1m']}; per round: {r['per_round']}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="fewer calls; within a minute")
    parser.add_argument("--rounds", type=int, default=None, help="default 9 (5 with --quick)")
    parser.add_argument("--calls", type=int, default=None, help="calls per model and round")
    parser.add_argument("--heavy-calls", type=int, default=None, help="per task and round")
    args = parser.parse_args()
    args.rounds = args.rounds or (5 if args.quick else 9)
    args.calls = args.calls or (5000 if args.quick else 20000)
    args.heavy_calls = args.heavy_calls or (200 if args.quick else 500)
    result = run(args)
    print_table(result)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
