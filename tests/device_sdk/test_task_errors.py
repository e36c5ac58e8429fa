"""Task failures are reported to the cloud: compact task_errors items, rate-limited."""

from __future__ import annotations

import re
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from device_sdk import (
    Device,
    DeviceStore,
    Outbox,
    TaskErrorReporter,
    TaskFailed,
    TaskFailure,
    TaskRuntime,
    TaskTimeout,
    task_error_report,
)
from device_sdk.wire import TaskErrorReport, UploadAccepted, UploadBatch, UploadChannel
from tests.device_sdk.fake_cloud import ENROLLMENT_KEY, FakeCloud
from tests.device_sdk.test_predict import active, release
from tests.device_sdk.test_runtime import RAISES, Tasks, entry
from tests.factories import ADMIN, device_headers, register_device

WAIT_S = 10.0
SLEEPS = "import time\ndef run(ctx, inputs):\n    time.sleep(0.5)\n"


def failure(kind: str = "exception", task: str = "rank", **fields: Any) -> TaskFailure:
    values: dict[str, Any] = {
        "task": task,
        "version": 1,
        "kind": kind,
        "error": ValueError("no ranking today"),
        "trigger": "schedule",
        "ts": 1_700_000_000.0,
    }
    return TaskFailure(**(values | fields))


class Queued(list[tuple[str, dict[str, Any]]]):
    """A stand-in for Device.queue that keeps what it is given."""

    def __call__(self, channel: str, payload: dict[str, Any]) -> str:
        self.append((channel, payload))
        return str(uuid.uuid4())


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_a_failing_task_call_reaches_on_failure(tmp_path: Path) -> None:
    """The runtime hands a raising call to on_failure as an exception of its trigger."""
    tasks = Tasks(tmp_path / "device")
    tasks.install("broken", **entry(RAISES))
    runtime = TaskRuntime(tasks.installer.tasks_dir)
    seen: list[TaskFailure] = []
    runtime.on_failure(seen.append)
    runtime.update(tasks.active())
    with pytest.raises(TaskFailed):
        runtime.predict("broken", {})
    runtime.stop()
    tasks.store.close()
    [reported] = seen
    assert (reported.task, reported.version, reported.kind, reported.trigger) == (
        "broken",
        1,
        "exception",
        "predict",
    )
    assert isinstance(reported.error, ValueError)


def test_a_timed_out_call_is_reported_as_a_timeout(tmp_path: Path) -> None:
    """A call past its limit reaches on_failure with kind 'timeout'."""
    tasks = Tasks(tmp_path / "device")
    tasks.install("slow", {"main.py": SLEEPS.encode()})
    runtime = TaskRuntime(tasks.installer.tasks_dir)
    seen: list[TaskFailure] = []
    runtime.on_failure(seen.append)
    runtime.update(tasks.active())
    with pytest.raises(TaskTimeout):
        runtime.predict("slow", {}, timeout_s=0.05)
    runtime.stop()
    tasks.store.close()
    assert [(f.kind, type(f.error)) for f in seen] == [("timeout", TaskTimeout)]


def test_a_raising_failure_callback_is_contained(tmp_path: Path) -> None:
    """An on_failure callback's exception never replaces the task's own error."""
    tasks = Tasks(tmp_path / "device")
    tasks.install("broken", **entry(RAISES))
    runtime = TaskRuntime(tasks.installer.tasks_dir)

    def broken(failure: TaskFailure) -> None:
        raise ZeroDivisionError("callback bug")

    runtime.on_failure(broken)
    runtime.update(tasks.active())
    with pytest.raises(TaskFailed, match="no ranking today"):
        runtime.predict("broken", {})
    runtime.stop()
    tasks.store.close()


def test_the_report_is_compact() -> None:
    """A report carries task, version, kind, error type, a cut message, trigger and ts."""
    report = task_error_report(failure(error=RuntimeError("x" * 2000 + "\x00")))
    assert report.model_dump() == {
        "task": "rank",
        "version": 1,
        "kind": "exception",
        "error_type": "RuntimeError",
        "message": "x" * 497 + "...",
        "trigger": "schedule",
        "ts": 1_700_000_000.0,
        "suppressed": 0,
    }


def test_reports_are_rate_limited_and_count_the_suppressed() -> None:
    """One report per (task, version, kind) per interval; the next counts those held back."""
    queued, clock = Queued(), Clock()
    reporter = TaskErrorReporter(queued, interval_s=60, clock=clock)
    for _ in range(5):
        reporter(failure())
    reporter(failure(kind="timeout"))
    reporter(failure(task="other"))
    assert [(c, p["task"], p["kind"]) for c, p in queued] == [
        ("task_errors", "rank", "exception"),
        ("task_errors", "rank", "timeout"),
        ("task_errors", "other", "exception"),
    ]
    clock.now = 61
    reporter(failure())
    assert queued[-1][1]["suppressed"] == 4
    assert (reporter.sent, reporter.suppressed) == (4, 4)


def test_a_failing_queue_is_contained_and_counted() -> None:
    """A queue that raises is logged; the failure is counted in the next report."""
    clock = Clock()

    def refuse(channel: str, payload: dict[str, Any]) -> str:
        raise OSError("disk full")

    reporter = TaskErrorReporter(refuse, interval_s=60, clock=clock)
    reporter(failure())
    queued = Queued()
    reporter._queue = queued
    clock.now = 61
    reporter(failure())
    assert queued[0][1]["suppressed"] == 1


def test_device_queues_a_task_error_for_a_failing_predict(tmp_path: Path) -> None:
    """A failing predict on a Device leaves one task_errors item in its outbox."""
    tasks = Tasks(tmp_path / "device")
    tasks.install("broken", **entry(RAISES))
    tasks.store.close()
    device = Device("http://cloud", enrollment_key=ENROLLMENT_KEY, data_dir=tmp_path / "device")
    for _ in range(3):
        with pytest.raises(TaskFailed):
            device.predict("broken", {})
    store = DeviceStore(tmp_path / "device" / "device.db")
    outbox = Outbox(store)
    [item] = outbox.pending(channel="task_errors")
    outbox.close()
    store.close()
    report = TaskErrorReport.model_validate(item.payload)
    assert (report.task, report.kind, report.error_type) == ("broken", "exception", "ValueError")


class UploadingCloud:
    """The fake cloud plus an uploads endpoint that stores each (channel, key) once."""

    def __init__(self, cloud: FakeCloud) -> None:
        self.cloud = cloud
        self.items: dict[str, tuple[str, dict[str, Any]]] = {}
        self.lock = threading.Lock()

    def handle(self, request: httpx.Request) -> httpx.Response:
        match = re.fullmatch(r"/v1/devices/me/uploads/(\w+)", request.url.path)
        if match is None:
            return self.cloud.handle(request)
        channel = UploadChannel(match.group(1))
        batch = UploadBatch.model_validate_json(request.read())
        with self.lock:
            new = [i for i in batch.items if i.key not in self.items]
            self.items |= {i.key: (channel.value, i.payload) for i in new}
        accepted = UploadAccepted(accepted=len(new), duplicates=len(batch.items) - len(new))
        return httpx.Response(200, json=accepted.model_dump())


@pytest.fixture
def uploads(tmp_path: Path) -> Iterator[tuple[UploadingCloud, Device]]:
    cloud = UploadingCloud(FakeCloud())
    device = Device(
        "http://cloud",
        enrollment_key=ENROLLMENT_KEY,
        data_dir=tmp_path / "device",
        transport=httpx.MockTransport(cloud.handle),
    )
    device.start()
    yield cloud, device
    device.stop()


def test_a_task_error_reaches_the_cloud_once(uploads: tuple[UploadingCloud, Device]) -> None:
    """Failures of a started device are uploaded: one item for a burst, stored once."""
    cloud, device = uploads
    release(cloud.cloud, "broken", **entry(RAISES))
    device.wait_for(active("broken"), timeout_s=WAIT_S)
    for _ in range(3):
        with pytest.raises(TaskFailed):
            device.predict("broken", {})
    assert device.flush_uploads(WAIT_S)
    [(channel, payload)] = cloud.items.values()
    assert channel == "task_errors"
    assert (payload["task"], payload["kind"], payload["suppressed"]) == ("broken", "exception", 0)


def test_the_cloud_accepts_the_task_errors_channel(client: TestClient) -> None:
    """The cloud's uploads endpoint stores task_errors reports and lists them."""
    device = register_device(client)
    item = {
        "key": str(uuid.uuid4()),
        "payload": task_error_report(failure()).model_dump(mode="json"),
    }
    response = client.post(
        "/v1/devices/me/uploads/task_errors", headers=device_headers(device), json={"items": [item]}
    )
    assert response.status_code == 200, response.text
    listed = client.get("/v1/uploads/task_errors", headers=ADMIN).json()["items"]
    assert [(i["key"], i["payload"]) for i in listed] == [(item["key"], item["payload"])]
