"""The device SDK's sync against a real `tandem serve`: releases through the stream, devices
offline at release, a cloud restart, a tampered bundle, and a Redis restart."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from device_sdk import Device, DeviceStatus, VersionState
from tests.e2e.live_server import LiveServer, free_port
from tests.factories import ADMIN, ADMIN_TOKEN
from tests.task_factories import packed

pytestmark = pytest.mark.slow

WAIT_S = 60.0
# Short server heartbeats let the device notice a dead stream within seconds.
ENV = {
    "TANDEM_ADMIN_TOKEN": ADMIN_TOKEN,
    "TANDEM_STREAM_HEARTBEAT_S": "0.5",
    "TANDEM_DEPLOY_SWEEP_S": "0.2",
}


@pytest.fixture
def server(tmp_path: Path) -> Iterator[LiveServer]:
    with LiveServer(tmp_path / "cloud", env=ENV) as live:
        yield live


def enroll(server: LiveServer) -> str:
    response = httpx.post(f"{server.url}/v1/enrollment-keys", headers=ADMIN, json={})
    assert response.status_code == 201, response.text
    key: str = response.json()["key"]
    return key


def release(server: LiveServer, tmp_path: Path, version: int) -> dict[str, Any]:
    """Publish version ``version`` of task hello and deploy it to every device."""
    bundle = packed(tmp_path, name="hello", version=version, files={"main.py": f"V = {version}\n"})
    published = httpx.post(
        f"{server.url}/v1/tasks", headers=ADMIN, files={"bundle": ("hello.tar.gz", bundle)}
    )
    assert published.status_code == 201, published.text
    deployed = httpx.post(
        f"{server.url}/v1/deployments",
        headers=ADMIN,
        json={"task": "hello", "version": version, "target": {"everyone": True}, "stages": [100]},
    )
    assert deployed.status_code == 201, deployed.text
    return {"task": published.json(), "deployment": deployed.json()}


def device_for(server: LiveServer, key: str, data_dir: Path, **options: float) -> Device:
    return Device(
        server.url,
        enrollment_key=key,
        data_dir=data_dir,
        attributes={"platform": "linux"},
        heartbeat_timeout_s=options.get("heartbeat_timeout_s", 5.0),
        fallback_interval_s=options.get("fallback_interval_s", 21600.0),
    )


def runs(version: int) -> Callable[[DeviceStatus], bool]:
    """The condition: version ``version`` of hello is active and its reports delivered."""
    return lambda s: s.installed.get("hello") == version and s.unsent_reports == 0


def connected(status: DeviceStatus) -> bool:
    return status.stream_connected


def progress(server: LiveServer, deployment_id: int) -> dict[str, int]:
    body = httpx.get(f"{server.url}/v1/deployments/{deployment_id}", headers=ADMIN).json()
    totals = {"downloaded": 0, "active": 0, "failed": 0, "rolled_back": 0}
    for stage in body["progress"]:
        for state in totals:
            totals[state] += stage[state]
    return totals


def test_device_converges_on_a_release_through_the_stream(
    server: LiveServer, tmp_path: Path
) -> None:
    """A connected device installs and reports a release the stream tells it about."""
    with device_for(server, enroll(server), tmp_path / "device") as device:
        device.wait_for(connected, timeout_s=WAIT_S)
        released = release(server, tmp_path, 1)
        device.wait_for(runs(1), timeout_s=WAIT_S)
        path = device.task_path("hello")
        assert path is not None and (path / "main.py").read_text() == "V = 1\n"
    assert progress(server, released["deployment"]["id"])["active"] == 1, server.log()


def test_rollback_returns_the_device_to_the_previous_version_and_is_reported(
    server: LiveServer, tmp_path: Path
) -> None:
    """Rolling v2 back makes the device run v1 again without a download, and v2's
    deployment counts the device as rolled back."""
    with device_for(server, enroll(server), tmp_path / "device") as device:
        device.wait_for(connected, timeout_s=WAIT_S)
        release(server, tmp_path, 1)
        device.wait_for(runs(1), timeout_s=WAIT_S)
        second = release(server, tmp_path, 2)
        device.wait_for(runs(2), timeout_s=WAIT_S)
        deployment_id = second["deployment"]["id"]
        rolled = httpx.post(f"{server.url}/v1/deployments/{deployment_id}/rollback", headers=ADMIN)
        assert rolled.status_code == 200, rolled.text
        device.wait_for(runs(1), timeout_s=WAIT_S)
    assert progress(server, deployment_id)["rolled_back"] == 1, server.log()


def test_device_offline_at_release_converges_when_it_starts(
    server: LiveServer, tmp_path: Path
) -> None:
    """A registered device that was stopped during a release converges on its next start."""
    key = enroll(server)
    with device_for(server, key, tmp_path / "device") as device:
        device.wait_for(connected, timeout_s=WAIT_S)
    release(server, tmp_path, 1)
    with device_for(server, key, tmp_path / "device") as device:
        device.wait_for(runs(1), timeout_s=WAIT_S)


def test_device_reconnects_after_a_cloud_restart(tmp_path: Path) -> None:
    """After the cloud restarts on the same port and data, the device reconnects by itself
    and converges on a release made after the restart."""
    server = LiveServer(tmp_path / "cloud", env=ENV).start()
    try:
        with device_for(server, enroll(server), tmp_path / "device") as device:
            device.wait_for(connected, timeout_s=WAIT_S)
            server.stop()
            device.wait_for(lambda s: not s.stream_connected, timeout_s=WAIT_S)
            server.start()
            device.wait_for(connected, timeout_s=WAIT_S)
            release(server, tmp_path, 1)
            device.wait_for(runs(1), timeout_s=WAIT_S)
    finally:
        server.stop()


def test_tampered_bundle_is_rejected_and_previous_version_stays(
    server: LiveServer, tmp_path: Path
) -> None:
    """A bundle altered in the cloud's blob store is refused and reported failed, and the
    device keeps running the version it had."""
    with device_for(server, enroll(server), tmp_path / "device") as device:
        release(server, tmp_path, 1)
        device.wait_for(runs(1), timeout_s=WAIT_S)
        bundle = packed(tmp_path, name="hello", version=2, files={"main.py": "V = 2\n"})
        published = httpx.post(
            f"{server.url}/v1/tasks", headers=ADMIN, files={"bundle": ("b.tar.gz", bundle)}
        )
        assert published.status_code == 201, published.text
        digest = published.json()["bundle_sha256"]
        blob = server.data_dir / "blobs" / "sha256" / digest[:2] / digest[2:4] / digest
        data = blob.read_bytes()
        os.chmod(blob, 0o644)
        blob.write_bytes(data[:-8] + bytes(b ^ 0xFF for b in data[-8:]))
        deployed = httpx.post(
            f"{server.url}/v1/deployments",
            headers=ADMIN,
            json={"task": "hello", "version": 2, "target": {"everyone": True}, "stages": [100]},
        )
        assert deployed.status_code == 201, deployed.text

        def failed(status: DeviceStatus) -> bool:
            versions = {(v.version, v.state) for v in device.installed_tasks()}
            return (2, VersionState.failed) in versions and status.unsent_reports == 0

        status = device.wait_for(failed, timeout_s=WAIT_S)
        assert dict(status.installed) == {"hello": 1}
        path = device.task_path("hello")
        assert path is not None and (path / "main.py").read_text() == "V = 1\n"
    assert progress(server, deployed.json()["id"])["failed"] == 1, server.log()


class RedisServer:
    """A private, non-persistent ``redis-server`` on a free port that a test can restart."""

    def __init__(self, binary: str) -> None:
        self.binary = binary
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        command = [self.binary, "--port", str(self.port), "--save", "", "--appendonly", "no"]
        self.process = subprocess.Popen(
            command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), 0.5):
                    return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"redis-server did not listen on port {self.port} within 15 s")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(15)


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server is not installed; the Redis restart test needs its own one")
    redis = RedisServer(binary)
    redis.start()
    yield redis
    redis.stop()


def test_release_reaches_the_device_after_a_redis_restart(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    """With Redis killed and restarted under the cloud, a later release still reaches the
    device, by a nudge or, failing that, by the fallback check."""
    env = ENV | {"TANDEM_REDIS_URL": redis_server.url}
    with LiveServer(tmp_path / "cloud", env=env) as server:
        key = enroll(server)
        with device_for(server, key, tmp_path / "device", fallback_interval_s=3.0) as device:
            device.wait_for(connected, timeout_s=WAIT_S)
            redis_server.stop()
            redis_server.start()
            release(server, tmp_path, 1)
            device.wait_for(runs(1), timeout_s=WAIT_S)


def test_queued_items_reach_the_cloud_once(server: LiveServer, tmp_path: Path) -> None:
    """Items a started Device queues are uploaded, each stored once, and the outbox empties."""
    with device_for(server, enroll(server), tmp_path / "device") as device:
        keys = [device.queue("events", {"type": "click", "n": n}) for n in range(5)]
        assert device.flush_uploads(timeout_s=WAIT_S)
    stored = httpx.get(f"{server.url}/v1/uploads/events", headers=ADMIN).json()["items"]
    assert sorted(item["key"] for item in stored) == sorted(keys)
