"""Routing on the device against a real `tandem serve`: a task with routing.json runs
locally when its router says edge, asks the cloud's model otherwise, and reports back."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from device_sdk import Device, RoutingNotConfigured
from tests.cloud.router.factories import workload
from tests.e2e.live_server import LiveServer
from tests.factories import ADMIN, ADMIN_TOKEN, onnx_linear
from tests.task_factories import packed

pytestmark = pytest.mark.slow

WAIT_S = 60.0
ENV = {"TANDEM_ADMIN_TOKEN": ADMIN_TOKEN, "TANDEM_DEPLOY_SWEEP_S": "0.2"}
ENTRY = "def run(ctx, inputs):\n    return {'where': 'edge', 'keys': sorted(inputs)}\n"
ROUTING = {"router": "qa", "cloud_model": "qa-large", "text_input": "prompt"}


@pytest.fixture
def server(tmp_path: Path) -> Iterator[LiveServer]:
    with LiveServer(tmp_path / "cloud", env=ENV) as live:
        yield live


def prepare(server: LiveServer, tmp_path: Path) -> None:
    """A trained router, a cloud model, and a routed task deployed to every device."""
    with httpx.Client(base_url=server.url, headers=ADMIN, timeout=60) as http:
        http.post(
            "/v1/routers",
            json={
                "name": "qa",
                "metrics": [{"name": "correct", "weight": 1.0}],
                "budget": 0.35,
                "window": 50,
                "feature_spec": {"dim": 4096},
            },
        ).raise_for_status()
        http.post("/v1/routers/qa/observations", json={"items": workload(90)}).raise_for_status()
        http.post("/v1/routers/qa/train", json={"epochs": 150}).raise_for_status()
        http.post(
            "/v1/models",
            data={"name": "qa-large", "target": "cloud"},
            files={"file": ("m.onnx", onnx_linear(), "application/octet-stream")},
        ).raise_for_status()
        bundle = packed(
            tmp_path,
            name="qa",
            version=1,
            files={"main.py": ENTRY, "routing.json": json.dumps(ROUTING)},
        )
        http.post("/v1/tasks", files={"bundle": ("qa.tar.gz", bundle)}).raise_for_status()
        http.post(
            "/v1/deployments",
            json={"task": "qa", "version": 1, "target": {"everyone": True}, "stages": [100]},
        ).raise_for_status()


def started_device(server: LiveServer, data_dir: Path) -> Device:
    key = httpx.post(f"{server.url}/v1/enrollment-keys", headers=ADMIN, json={}).json()["key"]
    device = Device(server.url, enrollment_key=key, data_dir=data_dir)
    device.start()
    device.wait_for(lambda s: s.installed.get("qa") == 1, timeout_s=WAIT_S)
    return device


def test_auto_routing_uses_the_edge_or_the_cloud_model(server: LiveServer, tmp_path: Path) -> None:
    """An easy prompt runs the local task; a hard one returns the cloud model's outputs."""
    prepare(server, tmp_path)
    device = started_device(server, tmp_path / "device")
    try:
        x = np.ones((1, 4), dtype=np.float32)
        easy = device.predict(
            "qa", {"prompt": "question 500: river capital season", "x": x}, routing="auto"
        )
        assert easy == {"where": "edge", "keys": ["x"]}
        assert device.routing.last_decision("qa").target == "edge"
        hard = device.predict(
            "qa", {"prompt": "question 501: river integral season", "x": x}, routing="auto"
        )
        assert device.routing.last_decision("qa").target == "cloud"
        assert hard["y"].dtype == np.float32 and hard["y"].shape == (1, 2)
    finally:
        device.stop()


def test_device_decisions_are_reported_to_the_cloud(server: LiveServer, tmp_path: Path) -> None:
    """After flush, the router's statistics count the decisions the device took."""
    prepare(server, tmp_path)
    device = started_device(server, tmp_path / "device")
    try:
        x = np.ones((1, 4), dtype=np.float32)
        for i in range(5):
            device.predict("qa", {"prompt": f"question {i}: city song", "x": x}, routing="auto")
        assert device.routing.flush() == 5
    finally:
        device.stop()
    stats = httpx.get(f"{server.url}/v1/routers/qa", headers=ADMIN).json()["stats"]
    assert stats["requests"] == 5


def test_routing_a_task_without_routing_json_says_what_to_add(
    server: LiveServer, tmp_path: Path
) -> None:
    """routing="auto" on a task that ships no routing.json raises RoutingNotConfigured."""
    bundle = packed(tmp_path, name="qa", version=1, files={"main.py": ENTRY})
    httpx.post(
        f"{server.url}/v1/tasks", headers=ADMIN, files={"bundle": ("qa.tar.gz", bundle)}
    ).raise_for_status()
    httpx.post(
        f"{server.url}/v1/deployments",
        headers=ADMIN,
        json={"task": "qa", "version": 1, "target": {"everyone": True}, "stages": [100]},
    ).raise_for_status()
    device = started_device(server, tmp_path / "device")
    try:
        with pytest.raises(RoutingNotConfigured, match=r"routing\.json"):
            device.predict("qa", {"prompt": "hi"}, routing="auto")
        assert device.predict("qa", {"prompt": "hi"}) == {"where": "edge", "keys": ["prompt"]}
    finally:
        device.stop()
