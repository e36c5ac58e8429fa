"""The scale-out topology of docker-compose.yml, natively: two `tandem serve` processes
sharing one PostgreSQL, one Redis and one data directory."""

from __future__ import annotations

import json
import secrets
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import create_engine, text

from tests.e2e.live_server import LiveServer
from tests.factories import ADMIN, ADMIN_TOKEN, onnx_linear
from tests.services import require_postgres, require_redis
from tests.task_factories import packed

pytestmark = pytest.mark.slow


@pytest.fixture
def replicas(tmp_path: Path) -> Iterator[tuple[LiveServer, LiveServer]]:
    postgres = require_postgres().replace("postgresql://", "postgresql+psycopg://", 1)
    redis_url = require_redis()
    schema = f"r_{secrets.token_hex(6)}"
    engine = create_engine(postgres, isolation_level="AUTOCOMMIT")
    with engine.connect() as connection:
        connection.execute(text(f'CREATE SCHEMA "{schema}"'))
    env = {
        "TANDEM_DATABASE_URL": f"{postgres}?options=-csearch_path%3D{schema}",
        "TANDEM_REDIS_URL": redis_url,
        "TANDEM_ADMIN_TOKEN": ADMIN_TOKEN,
    }
    shared = tmp_path / "shared-data"
    first = LiveServer(shared, env=env, log_path=tmp_path / "a.log")
    second = LiveServer(shared, env=env, log_path=tmp_path / "b.log")
    try:
        # Started together, as an orchestrator would: migrations must not race.
        starters = [threading.Thread(target=s.start) for s in (first, second)]
        for thread in starters:
            thread.start()
        for thread in starters:
            thread.join()
        yield first, second
    finally:
        first.stop()
        second.stop()
        with engine.connect() as connection:
            connection.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        engine.dispose()


def test_event_published_on_one_replica_reaches_a_stream_on_the_other(
    replicas: tuple[LiveServer, LiveServer],
) -> None:
    """A device registered through replica A shows up on replica B's live event stream."""
    first, second = replicas
    assert first.process and first.process.poll() is None, first.log()
    assert second.process and second.process.poll() is None, second.log()
    received: list[dict[str, object]] = []
    subscribed = threading.Event()

    def listen() -> None:
        with httpx.stream("GET", f"{second.url}/v1/events", headers=ADMIN, timeout=20) as stream:
            for line in stream.iter_lines():
                if line.startswith("retry:"):
                    subscribed.set()  # the server subscribes before sending the first line
                if line.startswith("data: "):
                    received.append(json.loads(line.removeprefix("data: ")))
                    return

    listener = threading.Thread(target=listen)
    listener.start()
    assert subscribed.wait(15), second.log()
    key = httpx.post(f"{first.url}/v1/enrollment-keys", headers=ADMIN, json={}).json()["key"]
    device = httpx.post(f"{first.url}/v1/devices", json={"enrollment_key": key}).json()
    listener.join(20)
    assert received and received[0]["type"] == "device.registered", (first.log(), second.log())
    assert received[0]["device_id"] == device["device_id"]


def test_replicas_share_state_and_blobs(replicas: tuple[LiveServer, LiveServer]) -> None:
    """A model uploaded through replica A is listed and downloadable through replica B."""
    first, second = replicas
    data = onnx_linear()
    uploaded = httpx.post(
        f"{first.url}/v1/models",
        headers=ADMIN,
        data={"name": "shared", "target": "cloud"},
        files={"file": ("m.onnx", data)},
    )
    assert uploaded.status_code == 201, uploaded.text
    digest = uploaded.json()["sha256"]
    assert httpx.get(f"{second.url}/v1/models/shared", headers=ADMIN).status_code == 200
    assert httpx.get(f"{second.url}/v1/blobs/{digest}", headers=ADMIN).content == data


def test_release_on_one_replica_nudges_a_device_streaming_from_the_other(
    replicas: tuple[LiveServer, LiveServer], tmp_path: Path
) -> None:
    """A deployment created through replica A nudges a device whose stream is on replica B."""
    first, second = replicas
    bundle = packed(tmp_path, name="hello", version=1)
    published = httpx.post(
        f"{first.url}/v1/tasks", headers=ADMIN, files={"bundle": ("b.tar.gz", bundle)}
    )
    assert published.status_code == 201, published.text
    key = httpx.post(f"{first.url}/v1/enrollment-keys", headers=ADMIN, json={}).json()["key"]
    device = httpx.post(f"{first.url}/v1/devices", json={"enrollment_key": key}).json()
    auth = {"Authorization": f"Bearer {device['token']}"}
    events: list[dict[str, object]] = []
    connected = threading.Event()

    def listen() -> None:
        with httpx.stream(
            "GET", f"{second.url}/v1/devices/me/stream", headers=auth, timeout=20
        ) as r:
            for line in r.iter_lines():
                if line.startswith("data: "):
                    events.append(json.loads(line.removeprefix("data: ")))
                    connected.set()
                    if len(events) == 2:  # the state on connect, then the release's nudge
                        return

    listener = threading.Thread(target=listen)
    listener.start()
    assert connected.wait(15), second.log()
    released = httpx.post(
        f"{first.url}/v1/deployments", headers=ADMIN, json={"task": "hello", "version": 1}
    )
    assert released.status_code == 201, released.text
    listener.join(20)
    assert len(events) == 2, (first.log(), second.log())
    rev = events[1]["desired_rev"]
    state = httpx.get(f"{second.url}/v1/devices/me/desired", headers=auth).json()
    assert state["rev"] == rev
    assert [t["name"] for t in state["tasks"]] == ["hello"]
