"""Admin dashboard page times against a real `tandem serve` with a large fleet.

Seeds a fresh data directory's SQLite database (after migrations) with bulk Core inserts:
100,000 devices with realistic attributes and tags, 1,000 deployments of 10 tasks (most
rolled back or superseded, some active or paused), each device's desired tasks and status
reports (about 200,000 rows), 30 model versions and a month of router tallies. Then it
trains a router and fills a CoDA pool through the REST API, starts `tandem serve` on it,
logs in through the login form, and times every page and JSON refresh endpoint N times,
interleaved (one request per page per round), after a warm-up round.

    python bench/dashboard.py                 # 100,000 devices, 1,000 deployments, N=30
    python bench/dashboard.py --quick         # 10,000 devices, 200 deployments, N=10

The table gives p50 and p99 per page against the 200 ms limit; the last line is JSON.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import random
import re
import statistics
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import insert

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from cloud.blobs.tables import BlobRow  # noqa: E402
from cloud.core.db import make_engine  # noqa: E402
from cloud.deploy.buckets import bucket, stage_of  # noqa: E402
from cloud.deploy.tables import DeploymentRow, DeviceTaskRow, TaskStatusRow  # noqa: E402
from cloud.devices.tables import DeviceRow, DeviceTagRow  # noqa: E402
from cloud.migrations import upgrade  # noqa: E402
from cloud.registry.tables import ModelVersionRow  # noqa: E402
from cloud.router.tables import RouterTallyRow  # noqa: E402
from cloud.tasks.tables import TaskVersionRow  # noqa: E402
from tests.e2e.live_server import LiveServer  # noqa: E402

ADMIN_TOKEN = "bench-admin-token-0123456789abcdef"  # noqa: S105  # a throwaway server's key
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
LIMIT_MS = 200.0
TASKS = 10
STAGES = [1.0, 10.0, 50.0, 100.0]
PLATFORMS = [("android", 55), ("ios", 40), ("linux", 5)]
REGIONS = ["eu", "us", "apac", "latam", "mea", "cn"]
MODELS = [f"Model {c}{n}" for c in "ABCDEF" for n in range(1, 6)]
APP_VERSIONS = [f"5.{minor}.{patch}" for minor in range(6) for patch in range(4)]
CHUNK = 10_000


def machine() -> str:
    return f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"


def _weighted(rng: random.Random, pairs: list[tuple[str, int]]) -> str:
    return rng.choices([p for p, _ in pairs], weights=[w for _, w in pairs])[0]


def _chunks(rows: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    return [rows[i : i + CHUNK] for i in range(0, len(rows), CHUNK)]


def seed(database_url: str, devices: int, deployments: int, rng: random.Random) -> dict[str, Any]:
    """Fill the database; returns what the timed requests need (ids to ask for)."""
    engine = make_engine(database_url)
    upgrade(engine)
    now = datetime.now(UTC)
    with engine.begin() as db:
        blobs = [
            {
                "sha256": hashlib.sha256(f"blob-{i}".encode()).hexdigest(),
                "size": 4096 + i,
                "media_type": "application/octet-stream",
                "device_readable": True,
                "created_at": now,
            }
            for i in range(TASKS * 5 + 30)
        ]
        db.execute(insert(BlobRow), blobs)
        versions = []
        for t in range(TASKS):
            for v in range(1, 6):
                versions.append(
                    {
                        "id": len(versions) + 1,
                        "name": f"task-{t}",
                        "version": v,
                        "bundle_sha256": blobs[len(versions)]["sha256"],
                        "bundle_size": 4096,
                        "manifest": {"name": f"task-{t}", "version": v, "entry": "main.py"},
                        "signature": "0" * 128,
                        "created_at": now - timedelta(days=30 - v),
                    }
                )
        db.execute(insert(TaskVersionRow), versions)
        db.execute(
            insert(ModelVersionRow),
            [
                {
                    "name": f"model-{i // 3}",
                    "version": i % 3 + 1,
                    "target": "device" if i % 2 else "cloud",
                    "sha256": blobs[TASKS * 5 + i]["sha256"],
                    "size": 1_000_000 + i * 1000,
                    "inputs": [{"name": "x", "type": "float32", "shape": [None, 16]}],
                    "outputs": [{"name": "y", "type": "float32", "shape": [None, 1]}],
                    "opset": 17,
                    "metrics": {"auc": round(0.7 + rng.random() / 10, 4)},
                    "description": "",
                    "created_at": now - timedelta(days=i),
                }
                for i in range(30)
            ],
        )
        device_rows, tag_rows = [], []
        for seq in range(1, devices + 1):
            seen = now - timedelta(seconds=rng.expovariate(1 / 86400))
            device_rows.append(
                {
                    "seq": seq,
                    "device_id": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
                    "token_hash": hashlib.sha256(f"token-{seq}".encode()).hexdigest(),
                    "enrollment_key_id": None,
                    "platform": _weighted(rng, PLATFORMS),
                    "os_version": f"{rng.randint(10, 17)}.{rng.randint(0, 3)}",
                    "app_version": rng.choice(APP_VERSIONS),
                    "model": rng.choice(MODELS),
                    "region": rng.choice(REGIONS),
                    "created_at": seen - timedelta(days=rng.randint(0, 365)),
                    "last_seen": seen,
                    "desired_rev": rng.randint(0, 20),
                }
            )
            if rng.random() < 0.2:
                tag_rows.append({"device_seq": seq, "tag": "beta"})
            if rng.random() < 0.05:
                tag_rows.append({"device_seq": seq, "tag": "staff"})
        for chunk in _chunks(device_rows):
            db.execute(insert(DeviceRow), chunk)
        for chunk in _chunks(tag_rows):
            db.execute(insert(DeviceTagRow), chunk)
        # Deployments, oldest first: the newest per task is active (a few paused), older
        # ones were superseded or rolled back.
        deployment_rows = []
        live: dict[str, int] = {}
        for i in range(1, deployments + 1):
            task = i % TASKS
            newest = i > deployments - TASKS
            state = ("paused" if task % 4 == 0 else "active") if newest else "rolled_back"
            if not newest and rng.random() < 0.05:
                state = "paused"
            version = 1 + (i * 5 // deployments) % 5
            deployment_rows.append(
                {
                    "id": i,
                    "task_name": f"task-{task}",
                    "task_version_id": task * 5 + version,
                    "target": {"everyone": True}
                    if i % 3
                    else {"attr": "platform", "eq": "android"},
                    "stages": STAGES,
                    "gates": {"min_healthy": 100, "min_soak_s": 600, "max_failure_rate": 0.2}
                    if i % 2
                    else None,
                    "priority": 0,
                    "state": state,
                    "state_reason": "" if state == "active" else f"{state} by an admin",
                    "stage": rng.randint(0, 3),
                    # A live rollout's stage began recently, its soak not yet over: one
                    # whose gates had long been met would have been advanced by the sweeper
                    # already, and would be advanced during the measurement (each step
                    # re-materialises the whole fleet), a state a running cloud never holds.
                    "stage_started_at": now - timedelta(minutes=1)
                    if state == "active"
                    else now - timedelta(hours=deployments - i),
                    "created_at": now - timedelta(hours=deployments - i),
                    "updated_at": now - timedelta(hours=deployments - i),
                    "rev": 2,
                    "materialized_rev": 2,
                    "targeted": [devices // 100, devices // 10, devices // 2, devices],
                }
            )
            if state in ("active", "paused"):
                live[f"task-{task}"] = i
        db.execute(insert(DeploymentRow), deployment_rows)
        desired, statuses = [], []
        by_id = {row["id"]: row for row in deployment_rows}
        for device in device_rows:
            for task in rng.sample(sorted(live), 2):
                deployment_id = live[task]
                row = by_id[deployment_id]
                desired.append(
                    {
                        "device_seq": device["seq"],
                        "task_name": task,
                        "task_version_id": row["task_version_id"],
                        "deployment_id": deployment_id,
                    }
                )
                # An older deployment of any task this device once reported on.
                old = rng.randint(1, deployments - TASKS)
                for report_for in (deployment_id, old):
                    d = by_id[report_for]
                    statuses.append(
                        {
                            "device_seq": device["seq"],
                            "task_name": d["task_name"],
                            "version": (d["task_version_id"] - 1) % 5 + 1,
                            "deployment_id": report_for,
                            "stage": stage_of(bucket(report_for, device["device_id"]), STAGES),
                            "state": _weighted(
                                rng,
                                [
                                    ("active", 85),
                                    ("downloaded", 8),
                                    ("failed", 5),
                                    ("rolled_back", 2),
                                ],
                            ),
                            "reason": "",
                            "updated_at": device["last_seen"],
                        }
                    )
        seen_keys: set[tuple[int, str, int]] = set()
        unique = []
        for s in statuses:
            key = (s["device_seq"], s["task_name"], s["version"])
            if key not in seen_keys:
                seen_keys.add(key)
                unique.append(s)
        for chunk in _chunks(desired):
            db.execute(insert(DeviceTaskRow), chunk)
        for chunk in _chunks(unique):
            db.execute(insert(TaskStatusRow), chunk)
    engine.dispose()
    return {
        "device_id": device_rows[len(device_rows) // 2]["device_id"],
        "deployment_id": max(live.values()),
        "page_ids": list(range(deployments, deployments - 25, -1)),
        "status_rows": len(unique),
        "desired_rows": len(desired),
    }


def seed_tallies(database_url: str, router_id: int, rng: random.Random, n: int) -> None:
    """A month of routing decisions for the router, in tallies of up to 50 requests."""
    engine = make_engine(database_url)
    now = datetime.now(UTC)
    rows = []
    for _ in range(n):
        requests = rng.randint(1, 50)
        histogram = [0] * 20
        for _ in range(requests):
            histogram[min(19, int(rng.betavariate(3, 2) * 20))] += 1
        rows.append(
            {
                "router_id": router_id,
                "version": 1,
                "source": rng.choice(["cloud", "device"]),
                "requests": requests,
                "cloud": sum(histogram[:10]),
                "histogram": histogram,
                "at": now - timedelta(seconds=rng.uniform(0, 30 * 86400)),
            }
        )
    with engine.begin() as db:
        for chunk in _chunks(rows):
            db.execute(insert(RouterTallyRow), chunk)
    engine.dispose()


def seed_through_api(url: str, rng: random.Random) -> None:
    """A trained router that routed, and a CoDA pool with samples: via the REST API."""
    from tests.cloud.router.factories import SMALL_SPEC, workload

    with httpx.Client(base_url=url, headers=ADMIN, timeout=120) as api:
        router = {"name": "t2i", "metrics": [{"name": "correct", "weight": 1.0}], "budget": 0.3}
        api.post("/v1/routers", json={**router, "feature_spec": SMALL_SPEC}).raise_for_status()
        api.post("/v1/routers/t2i/observations", json={"items": workload(500)}).raise_for_status()
        trained = api.post("/v1/routers/t2i/train", json={"epochs": 100})
        if trained.status_code != 201:
            raise RuntimeError(f"training the router failed: {trained.text}")
        items = [{"text": item["text"]} for item in workload(200, seed=2)]
        api.post("/v1/route", json={"router": "t2i", "items": items}).raise_for_status()
        api.post("/v1/coda/pools", json={"name": "movies", "dim": 16}).raise_for_status()
        samples = [
            {
                "features": {"x": float(i)},
                "label": float(i % 2),
                "embedding": [rng.random() for _ in range(16)],
            }
            for i in range(2000)
        ]
        api.post("/v1/coda/pools/movies/samples", json={"samples": samples}).raise_for_status()


def log_in(client: httpx.Client) -> None:
    page = client.get("/dashboard/login")
    token = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
    assert token is not None, page.text
    response = client.post(
        "/dashboard/login", data={"admin_key": ADMIN_TOKEN, "csrf_token": token.group(1)}
    )
    assert response.status_code == 303, response.text


def targets(client: httpx.Client, found: dict[str, Any]) -> list[tuple[str, str]]:
    first = client.get("/dashboard/devices").text
    cursor = re.search(r"cursor=([^\"&]+)\"", first)
    ids = ",".join(str(i) for i in found["page_ids"])
    pages = [
        ("overview", "/dashboard"),
        ("devices", "/dashboard/devices"),
        ("devices, next page", f"/dashboard/devices?cursor={cursor.group(1) if cursor else ''}"),
        ("devices, platform=ios", "/dashboard/devices?platform=ios"),
        ("devices, region+version", "/dashboard/devices?region=eu&app_version=5.2.1"),
        ("devices, tag=staff", "/dashboard/devices?tag=staff"),
        ("devices, id prefix", f"/dashboard/devices?q={found['device_id'][:2]}"),
        ("device", f"/dashboard/devices/{found['device_id']}"),
        ("models", "/dashboard/models"),
        ("deployments", "/dashboard/deployments"),
        ("deployments, rolled_back", "/dashboard/deployments?state=rolled_back"),
        ("deployment", f"/dashboard/deployments/{found['deployment_id']}"),
        ("router", "/dashboard/router"),
        ("learning", "/dashboard/learning"),
        ("api: overview", "/dashboard/api/overview"),
        ("api: 25 deployments", f"/dashboard/api/deployments?ids={ids}"),
    ]
    return pages


def measure(client: httpx.Client, pages: list[tuple[str, str]], n: int) -> dict[str, list[float]]:
    times: dict[str, list[float]] = {name: [] for name, _ in pages}
    for round_ in range(n + 1):
        for name, path in pages:
            start = time.perf_counter()
            response = client.get(path)
            elapsed = (time.perf_counter() - start) * 1000
            if response.status_code != 200:
                raise RuntimeError(f"{path}: {response.status_code} {response.text[:500]}")
            if round_:  # the first round warms caches and connections
                times[name].append(elapsed)
    return times


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--devices", type=int, default=None)
    parser.add_argument("--deployments", type=int, default=None)
    parser.add_argument("-n", type=int, default=None, help="timed requests per page")
    parser.add_argument("--tallies", type=int, default=20_000)
    args = parser.parse_args()
    devices = args.devices or (10_000 if args.quick else 100_000)
    deployments = args.deployments or (200 if args.quick else 1_000)
    n = args.n or (10 if args.quick else 30)
    rng = random.Random(7)
    with tempfile.TemporaryDirectory(prefix="tandem-dashboard-") as tmp:
        data_dir = Path(tmp) / "data"
        data_dir.mkdir()
        url = f"sqlite:///{data_dir / 'tandem.db'}"
        started = time.perf_counter()
        found = seed(url, devices, deployments, rng)
        seed_s = time.perf_counter() - started
        env = {"TANDEM_ADMIN_TOKEN": ADMIN_TOKEN}
        with LiveServer(data_dir, env=env) as server:
            seed_through_api(server.url, rng)
            seed_tallies(url, 1, rng, args.tallies)
            with httpx.Client(base_url=server.url, timeout=60) as client:
                log_in(client)
                pages = targets(client, found)
                times = measure(client, pages, n)
    rows = []
    print(
        f"\nDashboard pages: {devices:,} devices, {deployments:,} deployments, "
        f"{found['status_rows']:,} status rows, {args.tallies:,} router tallies; "
        f"SQLite, one worker; N={n}; {machine()} (seeded in {seed_s:.0f} s)"
    )
    print(f"{'page':28} {'p50 ms':>8} {'p99 ms':>8} {'limit':>6} {'p99/limit':>10}")
    for name, _ in pages:
        p50 = statistics.median(times[name])
        p99 = percentile(times[name], 0.99)
        rows.append({"page": name, "p50_ms": round(p50, 1), "p99_ms": round(p99, 1)})
        print(f"{name:28} {p50:8.1f} {p99:8.1f} {LIMIT_MS:6.0f} {p99 / LIMIT_MS:10.2f}")
    worst = max(r["p99_ms"] for r in rows)
    print(f"slowest p99: {worst:.1f} ms ({'under' if worst < LIMIT_MS else 'OVER'} the limit)")
    print(
        json.dumps(
            {
                "devices": devices,
                "deployments": deployments,
                "n": n,
                "limit_ms": LIMIT_MS,
                "pages": rows,
                "max_p99_ms": worst,
                "machine": machine(),
            }
        )
    )


if __name__ == "__main__":
    main()
