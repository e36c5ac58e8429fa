"""FakeCloud serves routing: an app's tests drive predict(routing="auto") with no server."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from cloud.router.export import to_onnx
from device_sdk import Device
from device_sdk.testing import ENROLLMENT_KEY, FakeCloud
from tests.cloud.router.test_model import export_of, trained
from tests.device_sdk.test_routing_agent import EASY, HARD
from tests.task_factories import packed

ENTRY = "def run(ctx, inputs):\n    return {'where': 'edge'}\n"
ROUTING = {"router": "qa", "cloud_model": "qa-large", "text_input": "prompt"}


@pytest.fixture
def fake(tmp_path: Path) -> FakeCloud:
    cloud = FakeCloud()
    model, _ = trained()
    onnx = to_onnx(model)
    cloud.routing.serve_router(export_of(model, onnx).model_copy(update={"threshold": 0.5}), onnx)
    cloud.routing.serve_model("qa-large", lambda inputs: {"y": inputs["x"] * 2})
    bundle = packed(
        tmp_path, name="qa", files={"main.py": ENTRY, "routing.json": json.dumps(ROUTING)}
    )
    cloud.deploy("qa", cloud.publish(bundle))
    return cloud


def test_fake_cloud_routes_to_the_device_or_its_model(fake: FakeCloud, tmp_path: Path) -> None:
    """Against the fake, an easy prompt runs the task and a hard one the fake's model."""
    x = np.arange(4, dtype=np.float32).reshape(1, 4)
    with Device(
        "http://cloud",
        enrollment_key=ENROLLMENT_KEY,
        data_dir=tmp_path / "d",
        transport=fake.transport,
    ) as device:
        device.wait_for(lambda s: s.installed.get("qa") == 1, timeout_s=10)
        assert device.predict("qa", {"prompt": EASY, "x": x}, routing="auto") == {"where": "edge"}
        hard = device.predict("qa", {"prompt": HARD, "x": x}, routing="auto")
        assert np.array_equal(hard["y"], x * 2) and hard["y"].dtype == np.float32
        assert device.routing.flush() == 2
    assert fake.routing.reported("qa") == 2
    assert [name for name, _ in fake.routing.inferred] == ["qa-large"]


def test_fake_refuses_onnx_bytes_of_another_export() -> None:
    """serve_router checks the ONNX bytes against the export's digest."""
    model, _ = trained()
    onnx = to_onnx(model)
    with pytest.raises(ValueError, match="do not match"):
        FakeCloud().routing.serve_router(export_of(model, onnx), onnx + b"!")
