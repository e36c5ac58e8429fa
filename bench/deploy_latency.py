"""Push-then-pull release latency against a real `tandem serve` on loopback.

Simulated devices speak the real protocol (event stream, desired state, bundle, status)
through a light asyncio client. In one run:

- push devices hold the event stream open; a task is released to 100 % and each device's
  time from the release to its `active` report is measured;
- poll devices (the peer) have no stream and poll their desired state every 30 s;
- offline devices are registered but connect only after the release has finished;
- an idle window before the release counts the requests devices make while nothing happens.

    python bench/deploy_latency.py --quick        # 500 devices, within a minute
    python bench/deploy_latency.py                # 2,000 devices
    python bench/deploy_latency.py --devices 5000

The last line printed is a JSON object with the figures.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import platform
import random
import resource
import secrets
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import uvloop

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.light_http import Connection, sse_events  # noqa: E402
from device_sdk import bundle as bundle_format  # noqa: E402
from device_sdk.wire import TaskManifest  # noqa: E402
from examples.tiny_model import tiny_model  # noqa: E402
from tests.e2e.live_server import LiveServer  # noqa: E402

ADMIN_TOKEN = "bench-" + secrets.token_urlsafe(24)
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
SDK_FALLBACK_S = 6 * 3600.0  # device_sdk's default fallback reconcile interval


@dataclass
class SimDevice:
    device_id: str
    token: str
    public_key: str
    conn: Connection
    etag: str = ""
    active_at: float | None = None
    connected_at: float | None = None
    release_requests: int = 0
    # When each step of the release finished (monotonic), for the phase breakdown.
    phases: dict[str, float] = field(default_factory=dict)
    idle_requests: int = 0
    errors: list[str] = field(default_factory=list)

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    async def desired(self) -> dict[str, Any] | None:
        response = await self.conn.request(
            "GET", "/v1/devices/me/desired", headers={**self.auth, "If-None-Match": self.etag}
        )
        if response.status == 304:
            return None
        self.etag = response.headers.get("etag", "")
        body: dict[str, Any] = response.json()
        return body

    async def install(self, state: dict[str, Any]) -> None:
        """Download, verify (digest and signature) and report each new task: the device's
        side of a release, as the SDK does it."""
        self.phases.setdefault("desired", time.monotonic())
        for task in state["tasks"]:
            response = await self.conn.request(
                "GET", f"/v1/bundles/{task['bundle_sha256']}", headers=self.auth
            )
            self.phases.setdefault("bundle", time.monotonic())
            if hashlib.sha256(response.body).hexdigest() != task["bundle_sha256"]:
                self.errors.append("bundle digest mismatch")
                continue
            bundle_format.verify_signature(
                TaskManifest.model_validate(task["manifest"]), task["signature"], self.public_key
            )
            reports = [
                {"task": task["name"], "version": task["version"], "state": state_name}
                for state_name in ("downloaded", "active")
            ]
            await self.conn.request(
                "POST", "/v1/devices/me/status", headers=self.auth, json_body={"reports": reports}
            )
            self.active_at = time.monotonic()


async def register(
    host: str, port: int, key: str, n: int, concurrency: int = 16
) -> list[SimDevice]:
    connections = [Connection(host, port) for _ in range(concurrency)]
    devices: list[SimDevice] = []

    async def worker(conn: Connection, count: int) -> None:
        for _ in range(count):
            body = {
                "enrollment_key": key,
                "attributes": {"platform": "android", "app_version": "5.2.0"},
            }
            response = await conn.request("POST", "/v1/devices", json_body=body)
            data = response.json()
            devices.append(
                SimDevice(
                    data["device_id"],
                    data["token"],
                    data["platform_public_key"],
                    Connection(host, port),
                )
            )

    shares = [n // concurrency + (1 if i < n % concurrency else 0) for i in range(concurrency)]
    await asyncio.gather(*(worker(c, s) for c, s in zip(connections, shares, strict=True)))
    for conn in connections:
        conn.close()
    return devices


class PushFleet:
    """Devices with an open event stream: they reconcile on each `desired` event."""

    def __init__(self, host: str, port: int, devices: list[SimDevice]) -> None:
        self.host, self.port, self.devices = host, port, devices
        self.ready = 0
        self.all_ready = asyncio.Event()
        self.released = False
        self.tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        self.tasks = [asyncio.create_task(self._run(d)) for d in self.devices]

    async def _run(self, device: SimDevice) -> None:
        first = True
        try:
            async for event in sse_events(
                self.host, self.port, "/v1/devices/me/stream", device.auth
            ):
                if event.get("event") != "desired":
                    continue
                if self.released:
                    device.phases.setdefault("nudge", time.monotonic())
                if first:
                    device.connected_at = time.monotonic()
                before = device.conn.requests
                state = await device.desired()
                if state is not None and state["tasks"] and device.active_at is None:
                    await device.install(state)
                used = device.conn.requests - before
                if self.released:
                    device.release_requests += used
                elif not first:
                    device.idle_requests += used
                if first:
                    first = False
                    self.ready += 1
                    if self.ready == len(self.devices):
                        self.all_ready.set()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # recorded and reported: one device's failure is a data point
            device.errors.append(repr(exc))

    async def stop(self) -> None:
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        for device in self.devices:
            device.conn.close()


class PollFleet:
    """The peer: no stream; each device polls its desired state every `interval` seconds."""

    def __init__(self, devices: list[SimDevice], interval: float, rng: random.Random) -> None:
        self.devices, self.interval, self.rng = devices, interval, rng
        self.released_at: float | None = None
        self.tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        self.tasks = [asyncio.create_task(self._run(d)) for d in self.devices]

    async def _run(self, device: SimDevice) -> None:
        await device.desired()  # learn the ETag once, as a device does at start-up
        await asyncio.sleep(self.rng.uniform(0, self.interval))
        while device.active_at is None:
            before = device.conn.requests
            state = await device.desired()
            if state is not None and state["tasks"]:
                await device.install(state)
            if self.released_at is not None:
                device.release_requests += device.conn.requests - before
            else:
                device.idle_requests += device.conn.requests - before
            await asyncio.sleep(self.interval)

    async def stop(self) -> None:
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        for device in self.devices:
            device.conn.close()


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def phase_times(devices: list[SimDevice], released_at: float, q: float) -> dict[str, float]:
    """When each step of the release finished, as a quantile over devices (s after release)."""
    return {
        phase: round(
            percentile([d.phases[p] - released_at for d in devices if (p := phase) in d.phases], q),
            3,
        )
        for phase in ("nudge", "desired", "bundle")
    }


def process_cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process, from /proc (Linux)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def machine() -> str:
    return f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"


def task_dir(root: Path) -> Path:
    directory = root / "task"
    directory.mkdir()
    manifest = {
        "name": "rerank",
        "version": 1,
        "entry": "main.py",
        "models": [{"name": "ranker", "file": "ranker.onnx"}],
    }
    (directory / "manifest.json").write_text(json.dumps(manifest))
    (directory / "main.py").write_text("def run(ctx, inputs):\n    return inputs\n")
    (directory / "ranker.onnx").write_bytes(tiny_model(64, 16).SerializeToString())
    return directory


def fast_path_share(metrics_text: str) -> dict[str, float]:
    """Per release route, the share of the server's requests (since it started) that the
    device fast path answered."""
    routes = {
        "desired": "/v1/devices/me/desired",
        "bundle": "/v1/bundles/{sha256}",
        "status": "/v1/devices/me/status",
        "stream": "/v1/devices/me/stream",
    }
    fast = dict.fromkeys(routes, 0.0)
    total = dict.fromkeys(routes, 0.0)
    for line in metrics_text.splitlines():
        for key, route in routes.items():
            if f'route="{route}"' not in line:
                continue
            if line.startswith("tandem_fast_path_requests_total{"):
                fast[key] += float(line.rsplit(" ", 1)[1])
            elif line.startswith("tandem_http_requests_total{"):
                total[key] += float(line.rsplit(" ", 1)[1])
    return {key: round(fast[key] / total[key], 3) if total[key] else 0.0 for key in routes}


async def wait_for(predicate: Any, within_s: float) -> bool:
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        await asyncio.sleep(0.05)
    return bool(predicate())


async def run(args: argparse.Namespace) -> dict[str, Any]:
    rng = random.Random(7)
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    n, n_poll, n_offline = args.devices, args.poll_devices, args.offline_devices
    with tempfile.TemporaryDirectory() as tmp:
        env = {"TANDEM_ADMIN_TOKEN": ADMIN_TOKEN, "TANDEM_LOG_REQUESTS": "false"}
        if args.database_url:
            env["TANDEM_DATABASE_URL"] = args.database_url
        if args.redis_url:
            env["TANDEM_REDIS_URL"] = args.redis_url
        server = LiveServer(Path(tmp) / "data", env=env, workers=args.workers).start()
        try:
            host, port = "127.0.0.1", server.port
            packed = bundle_format.pack(task_dir(Path(tmp)))[1]
            published = httpx.post(
                f"{server.url}/v1/tasks",
                headers=ADMIN,
                files={"bundle": ("b.tar.gz", packed)},
                timeout=60,
            )
            published.raise_for_status()
            key = httpx.post(f"{server.url}/v1/enrollment-keys", headers=ADMIN, json={}).json()[
                "key"
            ]
            started = time.monotonic()
            push = PushFleet(host, port, await register(host, port, key, n))
            poll = PollFleet(await register(host, port, key, n_poll), args.poll_interval, rng)
            offline = await register(host, port, key, n_offline)
            took = time.monotonic() - started
            print(f"registered {n + n_poll + n_offline} devices in {took:.1f} s", file=sys.stderr)
            push.start()
            poll.start()
            await asyncio.wait_for(push.all_ready.wait(), timeout=120)
            await asyncio.sleep(args.idle_s)  # the idle window: nothing is released
            idle_push = sum(d.idle_requests for d in push.devices)

            spy = None
            if args.profile:
                # py-spy on the server during the release only: profile before optimising.
                spy = subprocess.Popen(
                    [
                        "py-spy",
                        "record",
                        "-p",
                        str(server.process.pid),
                        "-o",
                        args.profile,
                        "-f",
                        "raw",
                        "-d",
                        "30",
                        "-r",
                        "200",
                        "--nonblocking",
                        "--gil",
                    ],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
                await asyncio.sleep(1.0)
            cpu_before = (process_cpu_s(server.process.pid), time.process_time())
            push.released = True
            released_at = time.monotonic()
            poll.released_at = released_at
            response = httpx.post(
                f"{server.url}/v1/deployments",
                headers=ADMIN,
                json={"task": "rerank", "version": 1},
                timeout=120,
            )
            response.raise_for_status()
            release_call_s = time.monotonic() - released_at
            await wait_for(lambda: all(d.active_at for d in push.devices), within_s=60)
            push_latencies = [d.active_at - released_at for d in push.devices if d.active_at]
            release_cpu = {
                "server": round(process_cpu_s(server.process.pid) - cpu_before[0], 2),
                "devices": round(time.process_time() - cpu_before[1], 2),
                "wall": round(time.monotonic() - released_at, 2),
            }
            if spy is not None:
                spy.send_signal(signal.SIGINT)
                spy.wait()
            fast_share = fast_path_share(
                httpx.get(f"{server.url}/metrics", headers=ADMIN, timeout=30).text
            )

            # Devices that were offline at the release connect now and must converge.
            late = PushFleet(host, port, offline)
            late.released = True
            late.start()
            await wait_for(lambda: all(d.active_at for d in offline), within_s=30)
            late_latencies = [
                d.active_at - d.connected_at for d in offline if d.active_at and d.connected_at
            ]
            missed_offline = sum(1 for d in offline if d.active_at is None)

            await wait_for(
                lambda: all(d.active_at for d in poll.devices), within_s=args.poll_interval + 30
            )
            poll_latencies = [d.active_at - released_at for d in poll.devices if d.active_at]
            await asyncio.gather(push.stop(), poll.stop(), late.stop())
        finally:
            server.stop()
        errors = [e for d in push.devices + poll.devices + offline for e in d.errors]
        for sample in sorted(set(errors))[:5]:
            print(f"error sample: {sample}", file=sys.stderr)

    idle_window_h = args.idle_s / 3600
    measured_idle = idle_push / max(1, n) / idle_window_h
    return {
        "devices": n,
        "p50_activation_s": round(percentile(push_latencies, 0.5), 3),
        "p99_activation_s": round(percentile(push_latencies, 0.99), 3),
        "max_activation_s": round(max(push_latencies, default=float("nan")), 3),
        "activated": len(push_latencies),
        "release_call_s": round(release_call_s, 3),
        "requests_per_device": round(statistics.mean(d.release_requests for d in push.devices), 2),
        "offline_devices": n_offline,
        "missed_offline": missed_offline,
        "offline_p99_convergence_s": round(percentile(late_latencies, 0.99), 3),
        "poll_devices": n_poll,
        "poll_p50_activation_s": round(percentile(poll_latencies, 0.5), 3),
        "poll_p99_activation_s": round(percentile(poll_latencies, 0.99), 3),
        "poll_requests_per_device": round(
            statistics.mean(d.release_requests for d in poll.devices), 2
        ),
        "idle_requests_per_device_hour": {
            # Measured in the idle window, plus the SDK's fallback reconcile (once per 6 h).
            "push": round(measured_idle + 3600 / SDK_FALLBACK_S, 3),
            "poll": round(3600 / args.poll_interval, 1),
        },
        "idle_measured_push_requests": idle_push,
        "heartbeats_per_device_hour": 3600 / 15,
        "phases_p50_s": phase_times(push.devices, released_at, 0.5),
        "phases_p99_s": phase_times(push.devices, released_at, 0.99),
        "release_cpu_s": release_cpu,
        "fast_path_share": fast_share,
        "errors": len(errors),
        "machine": machine(),
        "server": f"tandem serve, {args.workers} worker(s), "
        f"{'PostgreSQL' if args.database_url else 'SQLite'}, "
        f"{'Redis' if args.redis_url else 'in-process broker'}",
    }


def print_table(r: dict[str, Any]) -> None:
    rows = [
        ("release -> active p50 (s)", r["p50_activation_s"], r["poll_p50_activation_s"], "-"),
        ("release -> active p99 (s)", r["p99_activation_s"], r["poll_p99_activation_s"], "<= 2"),
        (
            "requests per device per release",
            r["requests_per_device"],
            r["poll_requests_per_device"],
            "<= 3",
        ),
        ("offline devices missed", r["missed_offline"], "-", "0"),
        (
            "idle requests / device-hour",
            r["idle_requests_per_device_hour"]["push"],
            r["idle_requests_per_device_hour"]["poll"],
            "< 1",
        ),
    ]
    print(
        f"\nDeploy latency: {r['devices']} push devices, {r['poll_devices']} polling, "
        f"{r['offline_devices']} offline at release; {r['machine']}; {r['server']}"
    )
    print(f"{'metric':36} {'push (ours)':>12} {'poll 30 s':>12} {'ratio':>8} {'target':>8}")
    for name, ours, peer, target in rows:
        ratio = (
            f"{ours / peer:.3f}"
            if isinstance(ours, int | float) and isinstance(peer, int | float) and peer
            else "-"
        )
        print(f"{name:36} {ours!s:>12} {peer!s:>12} {ratio:>8} {target:>8}")
    print(
        f"offline devices: p99 {r['offline_p99_convergence_s']} s from connect to active; "
        f"errors: {r['errors']}; "
        f"heartbeats: {r['heartbeats_per_device_hour']:.0f}/device-hour on the stream"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="500 devices, within a minute")
    parser.add_argument("--devices", type=int, default=None, help="push devices (default 2000)")
    parser.add_argument(
        "--poll-devices", type=int, default=None, help="default: same as --devices, at most 500"
    )
    parser.add_argument(
        "--offline-devices", type=int, default=None, help="default: 10 %% of --devices"
    )
    parser.add_argument("--poll-interval", type=float, default=30.0)
    parser.add_argument("--idle-s", type=float, default=None, help="idle window before the release")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--database-url", default=None)
    parser.add_argument("--redis-url", default=None)
    parser.add_argument("--profile", default=None, help="write a py-spy raw profile of the release")
    args = parser.parse_args()
    args.devices = args.devices or (500 if args.quick else 2000)
    args.poll_devices = (
        args.poll_devices if args.poll_devices is not None else min(args.devices, 500)
    )
    args.offline_devices = (
        args.offline_devices if args.offline_devices is not None else max(10, args.devices // 10)
    )
    args.idle_s = args.idle_s if args.idle_s is not None else (3.0 if args.quick else 10.0)
    # The simulated fleet is the load generator, not the system under test: it runs on
    # uvloop (as `tandem serve` does) so that it takes less of the two cores from the server.
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        result = runner.run(run(args))
    print_table(result)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
