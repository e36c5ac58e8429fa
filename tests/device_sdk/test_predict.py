"""Device.predict and Device.on_output: installed tasks run through the facade."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from device_sdk import Device, DeviceStatus, TaskFailed, TaskNotInstalled, TaskOutput
from tests.device_sdk.fake_cloud import ENROLLMENT_KEY, FakeCloud
from tests.device_sdk.test_runtime import ECHO, RAISES, Tasks, X, entry, linear, signed_task

WAIT_S = 10.0
VERSIONED = "def run(ctx, inputs):\n    ctx.emit('version', VERSION)\n    return VERSION\n"


@pytest.fixture
def cloud() -> FakeCloud:
    return FakeCloud()


def make_device(cloud: FakeCloud, data_dir: Path) -> Device:
    return Device(
        "http://cloud", enrollment_key=ENROLLMENT_KEY, data_dir=data_dir, transport=cloud.transport
    )


@pytest.fixture
def device(cloud: FakeCloud, tmp_path: Path) -> Iterator[Device]:
    started = make_device(cloud, tmp_path / "device")
    started.start()
    yield started
    started.stop()


def release(cloud: FakeCloud, name: str, version: int = 1, **options: Any) -> None:
    """Deploy a task signed by the fake cloud's platform key."""
    task, data = signed_task(name, version=version, key=cloud.key, **options)
    cloud.deploy(task, data)


def active(name: str, version: int = 1) -> Callable[[DeviceStatus], bool]:
    return lambda status: status.installed.get(name) == version


def versioned(version: int) -> dict[str, bytes]:
    return {"main.py": f"VERSION = {version}\n{VERSIONED}".encode()}


def test_predict_runs_a_released_model_task(cloud: FakeCloud, device: Device) -> None:
    """A model task released by the cloud answers predict with its model's outputs."""
    release(cloud, "ranker", files={"m.onnx": linear()}, models={"m": "m.onnx"})
    device.wait_for(active("ranker"), timeout_s=WAIT_S)
    outputs = device.predict("ranker", {"x": X})
    assert outputs["y"].shape == (1, 2) and outputs["y"].dtype == np.float32


def test_predict_follows_releases_and_rollbacks(cloud: FakeCloud, device: Device) -> None:
    """After v2 is installed predict runs v2; after a rollback to v1 it runs v1 again."""
    first, first_data = signed_task("rerank", versioned(1), key=cloud.key)
    cloud.deploy(first, first_data)
    device.wait_for(active("rerank", 1), timeout_s=WAIT_S)
    assert device.predict("rerank", {}) == 1
    release(cloud, "rerank", 2, files=versioned(2))
    device.wait_for(active("rerank", 2), timeout_s=WAIT_S)
    assert device.predict("rerank", {}) == 2
    cloud.deploy(first, first_data)
    device.wait_for(active("rerank", 1), timeout_s=WAIT_S)
    assert device.predict("rerank", {}) == 1


def test_unknown_task_names_installed_tasks(cloud: FakeCloud, device: Device) -> None:
    """predict on a task the device lacks raises TaskNotInstalled naming the installed ones."""
    release(cloud, "rerank", files=versioned(1))
    device.wait_for(active("rerank"), timeout_s=WAIT_S)
    with pytest.raises(TaskNotInstalled, match=r"'ranker' is not installed.*tasks: 'rerank'"):
        device.predict("ranker", {"x": X})


def test_predict_before_any_install_says_none_is_installed(tmp_path: Path) -> None:
    """On a device with no tasks, predict says that no task is installed yet."""
    device = Device("http://cloud", enrollment_key=ENROLLMENT_KEY, data_dir=tmp_path / "device")
    with pytest.raises(TaskNotInstalled, match="no task is installed yet"):
        device.predict("ranker", {"x": X})


def test_installed_tasks_run_without_start(tmp_path: Path) -> None:
    """Tasks installed earlier run on a Device that was never started (no cloud needed)."""
    tasks = Tasks(tmp_path / "device")
    tasks.install("ranker", {"m.onnx": linear()}, models={"m": "m.onnx"})
    tasks.store.close()
    device = Device("http://cloud", enrollment_key=ENROLLMENT_KEY, data_dir=tmp_path / "device")
    assert device.predict("ranker", {"x": X})["y"].shape == (1, 2)


def test_on_output_receives_what_tasks_emit(cloud: FakeCloud, device: Device) -> None:
    """A callback registered with on_output gets each call's emitted values."""
    outputs: list[TaskOutput] = []
    assert device.on_output(outputs.append) == outputs.append
    release(cloud, "rerank", files=versioned(1))
    device.wait_for(active("rerank"), timeout_s=WAIT_S)
    device.predict("rerank", {})
    assert [(o.task, o.values) for o in outputs] == [("rerank", (("version", 1),))]


def test_task_failures_show_in_status(cloud: FakeCloud, device: Device) -> None:
    """A failing task raises TaskFailed to predict and is counted in status().tasks."""
    release(cloud, "broken", **entry(RAISES))
    release(cloud, "rerank", **entry(ECHO))
    device.wait_for(lambda s: len(s.installed) == 2, timeout_s=WAIT_S)
    with pytest.raises(TaskFailed):
        device.predict("broken", {})
    device.predict("rerank", {"x": X})
    status: DeviceStatus = device.status()
    assert status.tasks["broken"].failures == 1 and status.tasks["rerank"].runs == 1
    assert isinstance(status.tasks["broken"].last_error, ValueError)


def test_predict_works_after_stop(cloud: FakeCloud, tmp_path: Path) -> None:
    """A stopped device still runs its installed tasks."""
    device = make_device(cloud, tmp_path / "device")
    device.start()
    release(cloud, "rerank", **entry(ECHO))
    device.wait_for(active("rerank"), timeout_s=WAIT_S)
    device.stop()
    assert device.predict("rerank", {"x": X})["y"].shape == (1, 2)
    device.stop()
