"""Device and cloud run one spec to identical outputs.

The device side is the real SDK path: a task ships the spec, ``Device.track`` records the
events, the pipelines write features and fire tasks, and the device uploads its events
on the ``events`` channel. Those very uploads are stored by the real cloud (SQLite and
PostgreSQL), whose ``POST /v1/pipelines/run`` runs the same spec over them.
"""

from __future__ import annotations

import queue
import random
import time
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient

from device_sdk import Device, FeatureStore, TaskOutput
from device_sdk.testing import FakeCloud
from tests.factories import ADMIN, device_headers, register_device
from tests.task_factories import make_task_dir

EMIT_PY = "def run(ctx, inputs):\n    ctx.emit('matched', [e['id'] for e in inputs])\n"
TRIGGERS = ("view_then_buy", "three_views", "abandoned")


def spec() -> dict[str, Any]:
    return {
        "version": 1,
        "name": "shop",
        "lateness": "5ms",
        "stages": [
            {"op": "filter", "type": ["view", "buy", "click"]},
            {"op": "key_by", "attr": "user"},
            {"op": "aggregate", "feature": "views", "fn": "count", "ttl": "1h"},
            {"op": "aggregate", "feature": "spend", "fn": "sum", "attr": "price",
             "window": {"kind": "tumbling", "size": "20ms"}},
            {"op": "aggregate", "feature": "mean_price", "fn": "mean", "attr": "price",
             "window": {"kind": "sliding", "size": "40ms", "slide": "10ms"}},
            {"op": "aggregate", "feature": "session_items", "fn": "distinct", "attr": "item",
             "window": {"kind": "session", "gap": "15ms"}},
            {"op": "aggregate", "feature": "top_items", "fn": "top_k", "attr": "item", "k": 2},
            {"op": "aggregate", "feature": "recent", "fn": "last_n", "attr": "item", "n": 5,
             "key_by": None},
            {"op": "trigger", "name": "view_then_buy", "pattern": {
                "steps": [{"type": "view"}, {"type": "buy", "where": {"price": {"gte": 5}}}],
                "within": "30ms"}},
            {"op": "trigger", "name": "three_views", "pattern": {
                "repeat": {"times": 3, "step": {"type": "view"}}, "within": "10ms"}},
            {"op": "trigger", "name": "abandoned", "pattern": {
                "steps": [{"type": "click"}], "not": {"type": "buy"}, "within": "8ms"}},
        ],
    }  # fmt: skip


def tracked_on_a_device(
    fake: FakeCloud, tmp_path: Path
) -> tuple[list[Any], dict[str, Any], list[tuple[str, list[str]]]]:
    """Track a random stream on a real device; return its uploads, features and firings."""
    for i, trigger in enumerate(TRIGGERS):
        extra: dict[str, Any] = {"pipeline": spec()} if i == 0 else {}
        task = make_task_dir(
            tmp_path,
            name=f"on-{trigger.replace('_', '-')}",
            files={"main.py": EMIT_PY},
            trigger={"kind": "event", "pattern": trigger},
            resources={"max_concurrency": 64, "timeout_ms": 10_000},
            **extra,
        )
        fake.deploy(f"on-{trigger.replace('_', '-')}", fake.publish(task))
    outputs: queue.Queue[TaskOutput] = queue.Queue()
    rng = random.Random(5)  # noqa: S311  # a reproducible test stream, not a secret
    with Device(
        "http://cloud",
        enrollment_key=fake.enrollment_key,
        data_dir=tmp_path / "device",
        transport=fake.transport,
        task_workers=8,
    ) as device:
        device.wait_for(lambda s: len(s.installed) == len(TRIGGERS), timeout_s=30)
        device.on_output(outputs.put)
        events = []
        for _ in range(300):
            kind = rng.choice(["view", "view", "buy", "click", "other"])
            attrs: dict[str, Any] = {
                "user": rng.choice(["u1", "u2", "u3"]),
                "item": rng.randint(1, 6),
            }
            if rng.random() < 0.8:
                attrs["price"] = rng.choice([1, 2.5, 5, 9.75])
            events.append(device.track(kind, **attrs).to_json())
            time.sleep(rng.choice([0, 0, 0.001, 0.004]))
        for start in range(0, len(events), 100):
            device.queue("events", {"events": events[start : start + 100]})
        assert device.flush_uploads(timeout_s=30)
        with device._reading() as store:  # the typed store, not just the values
            features = {
                name: FeatureStore(store).feature(name) for name, _ in FeatureStore(store).items()
            }
        engine = device._pipelines.engine
        assert engine is not None
        fired: list[tuple[str, list[str]]] = []
        for _ in range(engine.stats.firings):  # each firing runs one task, which emits once
            output = outputs.get(timeout=30)
            fired.append((output.task, dict(output.values)["matched"]))
        assert all(t.skipped == 0 and t.failures == 0 for t in device.status().tasks.values())
    return [u.payload for u in fake.uploads("events")], features, fired


def test_device_and_cloud_give_identical_outputs(client: TestClient, tmp_path: Path) -> None:
    """The features a device stored and the triggers it fired equal what the cloud's run
    of the same spec over that device's uploaded events returns."""
    payloads, device_features, device_fired = tracked_on_a_device(FakeCloud(), tmp_path)
    cloud_device = register_device(client)
    items = [
        {"key": f"00000000-0000-4000-8000-{i:012d}", "payload": p} for i, p in enumerate(payloads)
    ]
    stored = client.post(
        "/v1/devices/me/uploads/events", headers=device_headers(cloud_device), json={"items": items}
    )
    assert stored.status_code == 200, stored.text
    response = client.post(
        "/v1/pipelines/run",
        headers=ADMIN,
        json={"specs": [spec()], "uploads": {"device_id": cloud_device["device_id"]}},
    )
    assert response.status_code == 200, response.text
    cloud = response.json()
    assert cloud["events_read"] == 300
    assert cloud["firings"], "the stream should fire some triggers"

    assert {name: f.value for name, f in device_features.items()} == {
        name: f["value"] for name, f in cloud["features"].items()
    }
    for name, feature in device_features.items():
        # The device tags a stored value by its JSON type: a mean of nothing is "null".
        assert feature.value is None or feature.type == cloud["features"][name]["type"], name
        assert feature.expires_at is None or cloud["features"][name]["ttl_s"] == 3600
    cloud_fired = sorted(
        (f"on-{f['trigger'].replace('_', '-')}", [e["id"] for e in f["events"]])
        for f in cloud["firings"]
    )
    assert sorted(device_fired) == cloud_fired
