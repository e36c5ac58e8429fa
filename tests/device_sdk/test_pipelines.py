"""The device's pipelines: Device.track feeds the installed tasks' specs, features land in
the feature store, and trigger firings start the tasks that wait for them."""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from device_sdk import Device, InvalidBundle, TaskOutput, bundle
from device_sdk.testing import FakeCloud
from tests.task_factories import make_task_dir

EMIT_PY = (
    "def run(ctx, inputs):\n"
    "    ctx.emit('items', [e['attrs']['item'] for e in inputs])\n"
    "    ctx.emit('count', ctx.features.get('views'))\n"
)


def spec(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "version": 1,
        "name": "shop",
        "stages": [
            {"op": "filter", "type": ["view", "buy"]},
            {"op": "aggregate", "feature": "views", "fn": "count", "ttl": "1h"},
            {"op": "aggregate", "feature": "last_items", "fn": "last_n", "attr": "item", "n": 3},
            {
                "op": "trigger",
                "name": "view_then_buy",
                "pattern": {"steps": [{"type": "view"}, {"type": "buy"}], "within": "10m"},
            },
        ],
    }
    base.update(overrides)
    return base


class Outputs:
    """Collects what tasks emit, for waiting on it in a test."""

    def __init__(self) -> None:
        self.items: queue.Queue[TaskOutput] = queue.Queue()

    def __call__(self, output: TaskOutput) -> None:
        self.items.put(output)

    def next(self, timeout_s: float = 10.0) -> TaskOutput:
        return self.items.get(timeout=timeout_s)


def started(fake: FakeCloud, data_dir: Path, *tasks: str) -> Device:
    device = Device(
        "http://cloud",
        enrollment_key=fake.enrollment_key,
        data_dir=data_dir,
        transport=fake.transport,
    )
    device.start()
    device.wait_for(lambda s: all(t in s.installed for t in tasks), timeout_s=20)
    return device


@pytest.fixture
def fake() -> FakeCloud:
    return FakeCloud()


@pytest.fixture
def device(fake: FakeCloud, tmp_path: Path) -> Iterator[Device]:
    task = make_task_dir(
        tmp_path,
        name="on-buy",
        files={"main.py": EMIT_PY},
        trigger={"kind": "event", "pattern": "view_then_buy"},
        pipeline=spec(),
    )
    fake.deploy("on-buy", fake.publish(task))
    device = started(fake, tmp_path / "device", "on-buy")
    yield device
    device.stop()


def test_tracked_events_become_features(device: Device) -> None:
    """Each tracked event updates the spec's features in the device's feature store."""
    device.track("view", item="a")
    device.track("view", item="b")
    device.track("click", item="c")  # filtered out by the spec
    assert device.features["views"] == 2
    assert device.features["last_items"] == ["a", "b"]


def test_a_trigger_firing_runs_the_waiting_task_with_the_matched_events(device: Device) -> None:
    """A completed pattern starts the task whose trigger names it, with the matched events
    as inputs, after the features of that event are written."""
    outputs = Outputs()
    device.on_output(outputs)
    device.track("view", item="a")
    device.track("buy", item="a")
    output = outputs.next()
    assert output.task == "on-buy" and output.trigger == "event"
    assert dict(output.values) == {"items": ["a", "a"], "count": 2}


def test_app_callbacks_still_get_every_event(device: Device) -> None:
    """The pipelines do not take the app's on_event callbacks' place."""
    seen: list[str] = []
    device.on_event(lambda event: seen.append(event.type))
    device.track("view", item="a")
    assert seen == ["view"]


def test_an_invalid_spec_disables_only_that_tasks_pipeline(
    fake: FakeCloud,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A task whose spec is invalid runs no pipeline and is reported as failed; another
    task's valid pipeline runs. (Pack and publish refuse such a spec; a device still
    meets one when its pipelines library is older than the cloud's, simulated here by
    packing and publishing without the check.)"""
    monkeypatch.setattr("device_sdk.bundle.check_pipeline", lambda manifest: None)
    good = make_task_dir(tmp_path, name="good", pipeline=spec())
    bad_spec = spec(name="bad")
    bad_spec["stages"] = [
        {
            "op": "aggregate",
            "feature": "n",
            "fn": "count",
            "window": {"kind": "tumbling", "size": "-1s"},
        }
    ]
    bad = make_task_dir(tmp_path, name="bad", pipeline=bad_spec)
    fake.deploy("good", fake.publish(good))
    fake.deploy("bad", fake.publish(bad))
    with caplog.at_level(logging.ERROR, logger="device_sdk.pipelines"):
        device = started(fake, tmp_path / "device", "good", "bad")
    try:
        device.track("view", item="a")
        assert device.features["views"] == 1
        assert "n" not in device.features
        stats = device.status().tasks["bad"]
        assert stats.failures == 1
        assert "stages[0].window.size: must be a positive duration" in str(stats.last_error)
        assert "pipeline of task 'bad' disabled" in caplog.text
    finally:
        device.stop()


def test_a_restarted_device_carries_partial_matches_over(fake: FakeCloud, tmp_path: Path) -> None:
    """A device restarted between the two steps of a pattern still fires: the rebuilt
    engine replays the recent events of the durable log (firing nothing for them)."""
    task = make_task_dir(
        tmp_path,
        name="on-buy",
        files={"main.py": EMIT_PY},
        trigger={"kind": "event", "pattern": "view_then_buy"},
        pipeline=spec(),
    )
    fake.deploy("on-buy", fake.publish(task))
    first = started(fake, tmp_path / "device", "on-buy")
    first.track("view", item="a")
    first.stop()
    second = started(fake, tmp_path / "device", "on-buy")
    try:
        outputs = Outputs()
        second.on_output(outputs)
        second.track("buy", item="b")
        assert dict(outputs.next().values)["items"] == ["a", "b"]
        assert second.features["views"] == 2
    finally:
        second.stop()


def test_a_failing_pipeline_never_reaches_the_app(
    device: Device, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An error inside the pipelines is logged; track still returns the stored event."""
    engine = device._pipelines.engine
    assert engine is not None

    def broken(event: object) -> Any:
        raise RuntimeError("boom")

    monkeypatch.setattr(engine, "feed", broken)
    event = device.track("view", item="a")
    assert event.type == "view"


def test_tracking_from_many_threads_counts_every_event(device: Device) -> None:
    """Events tracked from several app threads at once are each counted once."""
    threads = [
        threading.Thread(target=lambda: [device.track("view", item="x") for _ in range(20)])
        for _ in range(4)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert device.features["views"] == 80


BAD_STAGES: list[dict[str, Any]] = [
    {"op": "aggregate", "feature": "n", "fn": "count", "window": {"kind": "tumbling", "size": 0}},
    {"op": "trigger", "name": "t", "pattern": {"steps": [], "within": "1h"}},
]


def test_pack_refuses_an_invalid_pipeline_naming_every_path(tmp_path: Path) -> None:
    """`tandem task pack` (bundle.pack) refuses a manifest whose pipeline the cloud would
    refuse, naming each bad path under ``pipeline.``."""
    task = make_task_dir(tmp_path, pipeline=spec(stages=BAD_STAGES))
    with pytest.raises(InvalidBundle) as caught:
        bundle.pack(task)
    message = str(caught.value)
    assert "pipeline.stages[0].window.size:" in message
    assert "pipeline.stages[1].pattern" in message
    assert "Fix manifest.json" in message


def test_fake_cloud_refuses_an_invalid_pipeline_as_the_cloud_does(tmp_path: Path) -> None:
    """FakeCloud.publish refuses an invalid pipeline, from a directory or from bundle
    bytes packed without the check, and publishes nothing."""
    fake = FakeCloud()
    task = make_task_dir(tmp_path, pipeline=spec(stages=BAD_STAGES))
    with pytest.raises(InvalidBundle, match=r"pipeline\.stages\[0\]\.window\.size"):
        fake.publish(task)
    good_manifest, _ = bundle.pack(make_task_dir(tmp_path, pipeline=spec()))
    bad_manifest = good_manifest.model_copy(update={"pipeline": spec(stages=BAD_STAGES)})
    data = bundle.build(bad_manifest, {"main.py": (task / "main.py").read_bytes()})
    with pytest.raises(InvalidBundle, match=r"pipeline\.stages\[1\]\.pattern"):
        fake.publish(data)
    assert fake.publish(make_task_dir(tmp_path, pipeline=spec())) == 1
