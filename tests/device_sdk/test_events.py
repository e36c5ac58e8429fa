"""Events and features in the local store, and Device.track / on_event / features."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from device_sdk import (
    Device,
    DeviceStore,
    Event,
    EventLog,
    FeatureStore,
    InvalidEvent,
    InvalidFeature,
)
from tests.device_sdk.fake_cloud import ENROLLMENT_KEY
from tests.device_sdk.test_runtime import Tasks


class Clock:
    """A settable clock, in seconds since the epoch."""

    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def store(tmp_path: Path) -> Iterator[DeviceStore]:
    opened = DeviceStore(tmp_path / "device.db")
    yield opened
    opened.close()


def make_device(data_dir: Path, **options: Any) -> Device:
    return Device("http://cloud", enrollment_key=ENROLLMENT_KEY, data_dir=data_dir, **options)


def test_record_returns_the_event_and_recent_lists_it(store: DeviceStore) -> None:
    """record returns {id, type, ts, attrs}; recent lists events in the order recorded."""
    log = EventLog(store)
    first = log.record("view", {"item": "a1", "tags": ["x", "y"]}, ts=10.0)
    second = log.record("click", {"item": "a1"})
    assert (first.type, first.ts, first.attrs) == ("view", 10.0, {"item": "a1", "tags": ["x", "y"]})
    assert len(first.id) == 36 and first.id != second.id
    assert log.recent(10) == [first, second]
    assert log.recent(1) == [second]


def test_a_repeated_id_is_ignored(store: DeviceStore) -> None:
    """Recording an id kept already stores nothing and returns the first event."""
    log = EventLog(store)
    first = log.record("view", {"n": 1}, id="e-1", ts=1.0)
    again, new = log.append("view", {"n": 2}, id="e-1", ts=2.0)
    assert (again, new) == (first, False)
    assert log.recent() == [first] and log.count() == 1


def test_the_cap_evicts_the_oldest_recorded_first(store: DeviceStore) -> None:
    """Past max_events, events go in the order they were recorded, whatever their ts."""
    log = EventLog(store, max_events=3)
    events = [log.record("e", {"n": n}, ts=100.0 - n) for n in range(5)]
    assert log.recent(10) == events[2:]
    assert log.count() == 3


@pytest.mark.parametrize(
    ("type_", "attrs", "options", "problem"),
    [
        pytest.param("", {}, {}, "event type must be a string of 1 to 64", id="empty type"),
        pytest.param("t" * 65, {}, {}, "1 to 64", id="long type"),
        pytest.param("a\nb", {}, {}, "control characters", id="control char in type"),
        pytest.param("t", {"a": {"b": 1}}, {}, "'a' is a dict", id="nested object"),
        pytest.param("t", {"a": [[1]]}, {}, "'a' is a list holding", id="nested list"),
        pytest.param("t", {"a": float("nan")}, {}, "'a' is a float", id="NaN"),
        pytest.param("t", {"a": "x" * 5000}, {}, "at most 4096", id="too big"),
        pytest.param("t", {}, {"ts": float("inf")}, "finite number", id="infinite ts"),
        pytest.param("t", {}, {"id": ""}, "event id must be", id="empty id"),
    ],
)
def test_invalid_events_are_refused(
    store: DeviceStore, type_: str, attrs: dict[str, Any], options: dict[str, Any], problem: str
) -> None:
    """A bad type, attribute, ts or id raises InvalidEvent (a ValueError) naming it."""
    with pytest.raises(InvalidEvent, match=problem) as raised:
        EventLog(store).record(type_, attrs, **options)
    assert isinstance(raised.value, ValueError)
    assert EventLog(store).count() == 0


def test_features_expire_after_their_ttl(store: DeviceStore) -> None:
    """An expired feature is not returned, and reading sweeps it from the store."""
    clock = Clock()
    features = FeatureStore(store, clock=clock)
    features.set("clicks_1h", 3, ttl_s=10)
    features.set("segment", "sports")
    assert features.get("clicks_1h") == 3
    clock.now += 11
    assert features.get("clicks_1h") is None
    assert features.items() == [("segment", "sports")]
    assert store.query("SELECT name FROM features")[0][0] == "segment"


def test_features_keep_their_type_tag(store: DeviceStore) -> None:
    """Each value is stored with a type tag and read back as written."""
    features = FeatureStore(store)
    for name, value, tag in [("f", 0.5, "float"), ("i", 2, "int"), ("l", (1, "a"), "list")]:
        features.set(name, value)
        feature = features.feature(name)
        assert feature is not None and feature.type == tag
    assert dict(features.items()) == {"f": 0.5, "i": 2, "l": [1, "a"]}


@pytest.mark.parametrize(
    ("name", "value", "ttl_s"),
    [("", 1, None), ("x", object(), None), ("x", float("inf"), None), ("x", 1, 0)],
)
def test_invalid_features_are_refused(
    store: DeviceStore, name: str, value: Any, ttl_s: float | None
) -> None:
    """A bad name, a value JSON cannot carry, or a non-positive TTL raises InvalidFeature."""
    with pytest.raises(InvalidFeature):
        FeatureStore(store).set(name, value, ttl_s=ttl_s)


def test_events_and_features_survive_a_reopen(tmp_path: Path) -> None:
    """What was recorded is still there after the store is closed and opened again."""
    store = DeviceStore(tmp_path / "device.db")
    event = EventLog(store).record("view", {"item": "a"})
    FeatureStore(store).set("segment", "sports", ttl_s=3600)
    store.close()
    reopened = DeviceStore(tmp_path / "device.db")
    assert EventLog(reopened).recent() == [event]
    assert FeatureStore(reopened).get("segment") == "sports"
    reopened.close()


def test_track_stores_the_event_and_calls_listeners(tmp_path: Path) -> None:
    """Device.track records the event durably, then hands it to each on_event callback."""
    device = make_device(tmp_path / "device")
    seen: list[Event] = []
    assert device.on_event(seen.append) == seen.append
    event = device.track("view", item="a1", price=9.5, type="kept as an attribute")
    assert seen == [event]
    assert event.attrs == {"item": "a1", "price": 9.5, "type": "kept as an attribute"}
    store = DeviceStore(tmp_path / "device" / "device.db")
    assert EventLog(store).recent() == [event]
    store.close()


def test_a_raising_listener_does_not_break_track(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A listener's exception is logged; track returns and later listeners still run."""
    device = make_device(tmp_path / "device")
    seen: list[Event] = []

    @device.on_event
    def broken(event: Event) -> None:
        raise RuntimeError("listener bug")

    device.on_event(seen.append)
    with caplog.at_level(logging.ERROR, logger="device_sdk.runtime"):
        event = device.track("view")
    assert seen == [event]
    assert "on_event callback failed" in caplog.text


def test_track_refuses_invalid_input(tmp_path: Path) -> None:
    """Bad attributes raise InvalidEvent from track, and no listener is called."""
    device = make_device(tmp_path / "device")
    seen: list[Event] = []
    device.on_event(seen.append)
    with pytest.raises(InvalidEvent, match="'cart' is a dict"):
        device.track("checkout", cart={"a": 1})
    assert seen == []


def test_track_keeps_at_most_max_events(tmp_path: Path) -> None:
    """The device's max_events caps the event log."""
    device = make_device(tmp_path / "device", max_events=2)
    events = [device.track("view", n=n) for n in range(3)]
    store = DeviceStore(tmp_path / "device" / "device.db")
    assert EventLog(store).recent() == events[1:]
    store.close()


def test_device_features_is_a_live_read_only_view(tmp_path: Path) -> None:
    """Device.features reads what the store holds now and cannot be written."""
    device = make_device(tmp_path / "device")
    assert dict(device.features) == {}
    store = DeviceStore(tmp_path / "device" / "device.db")
    FeatureStore(store).set("segment", "sports")
    store.close()
    assert device.features["segment"] == "sports"
    assert "missing" not in device.features and len(device.features) == 1
    with pytest.raises(TypeError):
        device.features["segment"] = "news"  # type: ignore[index]


def test_tasks_read_the_device_features(tmp_path: Path) -> None:
    """A task's ctx.features is the device's feature store."""
    tasks = Tasks(tmp_path / "device")
    tasks.install("reads", {"main.py": b"def run(ctx, inputs):\n    return ctx.features['seg']\n"})
    FeatureStore(tasks.store).set("seg", "sports")
    tasks.store.close()
    assert make_device(tmp_path / "device").predict("reads", {}) == "sports"
