"""The device event stream against a live server: initial state, nudges, heartbeats, and a
rollout that a dying replica left half done."""

from __future__ import annotations

import json
import queue
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import create_engine, text

from tests.e2e.live_server import LiveServer
from tests.factories import ADMIN, ADMIN_TOKEN
from tests.task_factories import packed

pytestmark = pytest.mark.slow


@pytest.fixture
def server(tmp_path: Path) -> Iterator[LiveServer]:
    env = {
        "TANDEM_ADMIN_TOKEN": ADMIN_TOKEN,
        "TANDEM_STREAM_HEARTBEAT_S": "0.3",
        "TANDEM_DEPLOY_SWEEP_S": "0.2",
    }
    with LiveServer(tmp_path / "data", env=env) as live:
        yield live


def _register(server: LiveServer) -> dict[str, Any]:
    key = httpx.post(f"{server.url}/v1/enrollment-keys", headers=ADMIN, json={}).json()["key"]
    device: dict[str, Any] = httpx.post(
        f"{server.url}/v1/devices", json={"enrollment_key": key}
    ).json()
    return device


def _publish(server: LiveServer, tmp_path: Path, version: int = 1) -> None:
    bundle = packed(tmp_path, name="hello", version=version)
    response = httpx.post(
        f"{server.url}/v1/tasks", headers=ADMIN, files={"bundle": ("b.tar.gz", bundle)}
    )
    assert response.status_code == 201, response.text


class StreamReader:
    """Reads a device's SSE stream in a thread; lines arrive on a queue."""

    def __init__(self, server: LiveServer, token: str, last_event_id: str | None = None) -> None:
        headers = {"Authorization": f"Bearer {token}"}
        if last_event_id is not None:
            headers["Last-Event-ID"] = last_event_id
        self.lines: queue.Queue[str] = queue.Queue()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(server.url, headers), daemon=True)
        self._thread.start()

    def _run(self, url: str, headers: dict[str, str]) -> None:
        with httpx.stream("GET", f"{url}/v1/devices/me/stream", headers=headers, timeout=10) as r:
            for line in r.iter_lines():
                self.lines.put(line)
                if self._stop.is_set():
                    return

    def next_event(self, timeout: float = 10) -> dict[str, str]:
        """The next event's fields (id, event, data), skipping comments and retry lines."""
        fields: dict[str, str] = {}
        deadline = time.monotonic() + timeout
        while True:
            # Heartbeats keep the queue busy, so the timeout bounds the whole wait.
            line = self.lines.get(timeout=max(0.0, deadline - time.monotonic()))
            if line == "" and fields:
                return fields
            if line.startswith(":") or line.startswith("retry:") or not line:
                continue
            name, _, value = line.partition(": ")
            fields[name] = value

    def saw_heartbeat(self, timeout: float = 5) -> bool:
        deadline = time.monotonic() + timeout
        while True:
            line = self.lines.get(timeout=max(0.0, deadline - time.monotonic()))
            if line.startswith(": heartbeat"):
                return True

    def close(self) -> None:
        self._stop.set()


def test_stream_sends_current_revision_then_a_nudge_on_release(
    server: LiveServer, tmp_path: Path
) -> None:
    """A new stream gets the current revision at once, then a `desired` event on release."""
    _publish(server, tmp_path)
    device = _register(server)
    reader = StreamReader(server, device["token"])
    first = reader.next_event()
    assert first["event"] == "desired"
    created = httpx.post(
        f"{server.url}/v1/deployments", headers=ADMIN, json={"task": "hello", "version": 1}
    )
    assert created.status_code == 201
    nudge = reader.next_event()
    assert json.loads(nudge["data"]) == {"desired_rev": int(nudge["id"])}
    assert int(nudge["id"]) > int(first["id"])
    reader.close()


def test_stream_skips_initial_event_when_caught_up_and_sends_heartbeats(
    server: LiveServer,
) -> None:
    """With Last-Event-ID equal to the current revision, only heartbeats arrive."""
    device = _register(server)
    rev = httpx.get(
        f"{server.url}/v1/devices/me/desired",
        headers={"Authorization": f"Bearer {device['token']}"},
    ).json()["rev"]
    reader = StreamReader(server, device["token"], last_event_id=str(rev))
    assert reader.saw_heartbeat()
    with pytest.raises(queue.Empty):
        reader.next_event(timeout=0.8)
    reader.close()


def test_stream_refuses_admin_and_unknown_tokens(server: LiveServer) -> None:
    """The stream is for devices: an admin key gets 403, an unknown token 401."""
    url = f"{server.url}/v1/devices/me/stream"
    assert httpx.get(url, headers=ADMIN).status_code == 403
    assert httpx.get(url, headers={"Authorization": "Bearer tdm_device_nope"}).status_code == 401


def test_sweeper_finishes_a_rollout_left_half_done(tmp_path: Path) -> None:
    """If a replica commits a stage change and dies before updating devices, the next
    replica's sweeper brings every device's desired state up to date."""
    data_dir = tmp_path / "data"
    env = {"TANDEM_ADMIN_TOKEN": ADMIN_TOKEN, "TANDEM_DEPLOY_SWEEP_S": "0.2"}
    with LiveServer(data_dir, env=env) as first:
        _publish(first, tmp_path)
        devices = [_register(first) for _ in range(20)]
        created = httpx.post(
            f"{first.url}/v1/deployments",
            headers=ADMIN,
            json={"task": "hello", "version": 1, "stages": [10, 100]},
        ).json()
    # The replica is gone; simulate the half-done advance it committed before dying.
    engine = create_engine(f"sqlite:///{data_dir / 'tandem.db'}")
    with engine.begin() as connection:
        connection.execute(
            text("UPDATE deployments SET stage = 1, rev = rev + 1 WHERE id = :id"),
            {"id": created["id"]},
        )
    engine.dispose()
    with LiveServer(data_dir, env=env) as second:
        caught_up = False
        for _ in range(100):
            state = httpx.get(f"{second.url}/v1/deployments/{created['id']}", headers=ADMIN).json()
            caught_up = state["materialized"]
            if caught_up:
                break
            time.sleep(0.1)
        assert caught_up, second.log()
        reached = [
            httpx.get(
                f"{second.url}/v1/devices/me/desired",
                headers={"Authorization": f"Bearer {d['token']}"},
            ).json()["tasks"]
            for d in devices
        ]
    assert all(len(tasks) == 1 for tasks in reached)


def test_removing_a_device_closes_its_stream(server: LiveServer) -> None:
    """An admin removing a device ends its open stream; reconnecting gets 401."""
    device = _register(server)
    headers = {"Authorization": f"Bearer {device['token']}"}
    ended = threading.Event()
    opened = threading.Event()

    def listen() -> None:
        with httpx.stream(
            "GET", f"{server.url}/v1/devices/me/stream", headers=headers, timeout=10
        ) as response:
            opened.set()
            for _line in response.iter_lines():
                pass
        ended.set()

    threading.Thread(target=listen, daemon=True).start()
    assert opened.wait(10)
    removed = httpx.delete(f"{server.url}/v1/devices/{device['device_id']}", headers=ADMIN)
    assert removed.status_code == 204
    assert ended.wait(5), "the stream stayed open after the device was removed"
    again = httpx.get(f"{server.url}/v1/devices/me/stream", headers=headers)
    assert again.status_code == 401
