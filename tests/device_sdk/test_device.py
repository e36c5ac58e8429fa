"""The Device facade: registration once, background sync over the stream, restarts, revocation."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from device_sdk import (
    Device,
    DeviceRevoked,
    DeviceStatus,
    DeviceStore,
    IdentityMismatch,
    RegistrationRefused,
)
from tests.device_sdk.fake_cloud import ENROLLMENT_KEY, FakeCloud

WAIT_S = 10.0


@pytest.fixture
def cloud() -> FakeCloud:
    return FakeCloud()


def make_device(cloud: FakeCloud, data_dir: Path, enrollment_key: str = ENROLLMENT_KEY) -> Device:
    return Device(
        "http://cloud",
        enrollment_key=enrollment_key,
        data_dir=data_dir,
        attributes={"platform": "android"},
        transport=cloud.transport,
    )


@pytest.fixture
def device(cloud: FakeCloud, tmp_path: Path) -> Iterator[Device]:
    started = make_device(cloud, tmp_path / "device")
    started.start()
    yield started
    started.stop()


def runs(version: int) -> Callable[[DeviceStatus], bool]:
    """The condition: version ``version`` of task hello is active and reported."""
    return lambda status: status.installed.get("hello") == version and status.unsent_reports == 0


def sync_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("tandem-sync")]


def test_device_converges_on_a_release_through_the_stream(cloud: FakeCloud, device: Device) -> None:
    """A release nudged over the stream is installed, activated and reported."""
    assert cloud.stream_opened(1)
    cloud.release("hello", 1)
    status = device.wait_for(runs(1), timeout_s=WAIT_S)
    assert status.stream_connected and status.device_id == "dev-1"
    assert cloud.reported() == [("hello", 1, "downloaded"), ("hello", 1, "active")]


def test_task_path_is_the_active_versions_directory(cloud: FakeCloud, device: Device) -> None:
    """task_path() points at the active version's files; unknown tasks give None."""
    cloud.release("hello", 1)
    device.wait_for(runs(1), timeout_s=WAIT_S)
    path = device.task_path("hello")
    assert path is not None and (path / "main.py").read_text() == "VERSION = 1\n"
    assert device.task_path("missing") is None


def test_registration_happens_once_per_data_dir(cloud: FakeCloud, tmp_path: Path) -> None:
    """A second start on the same data directory reuses the stored identity."""
    for _ in range(2):
        with make_device(cloud, tmp_path / "device"):
            pass
    assert cloud.paths("POST").count("/v1/devices") == 1


def test_refused_enrollment_key_raises_from_start(cloud: FakeCloud, tmp_path: Path) -> None:
    """start() with an enrollment key the cloud refuses raises RegistrationRefused."""
    device = make_device(cloud, tmp_path / "device", enrollment_key="wrong")
    with pytest.raises(RegistrationRefused, match="invalid_enrollment_key"):
        device.start()
    assert device.status().device_id is None


def test_data_dir_of_another_cloud_is_refused(cloud: FakeCloud, tmp_path: Path) -> None:
    """A data directory registered with one cloud cannot be started against another."""
    with make_device(cloud, tmp_path / "device"):
        pass
    other = Device(
        "http://elsewhere",
        enrollment_key=ENROLLMENT_KEY,
        data_dir=tmp_path / "device",
        transport=cloud.transport,
    )
    with pytest.raises(IdentityMismatch, match="http://elsewhere"):
        other.start()


def test_device_reconnects_after_the_stream_drops(cloud: FakeCloud, device: Device) -> None:
    """After the cloud ends the stream, the device reconnects and still gets releases."""
    assert cloud.stream_opened(1)
    cloud.drop_streams()
    assert cloud.stream_opened(2)
    cloud.release("hello", 1)
    device.wait_for(runs(1), timeout_s=WAIT_S)


def test_unsent_status_reports_survive_a_restart(cloud: FakeCloud, tmp_path: Path) -> None:
    """Reports the cloud refused before a restart are delivered by the next Device."""
    cloud.status_failures = 1_000_000
    first = make_device(cloud, tmp_path / "device")
    first.start()
    cloud.release("hello", 1)
    first.wait_for(lambda s: s.installed.get("hello") == 1, timeout_s=WAIT_S)
    first.stop()
    store = DeviceStore(tmp_path / "device" / "device.db")
    assert store.count_pending_reports() == 2
    store.close()
    cloud.status_failures = 0
    with make_device(cloud, tmp_path / "device") as second:
        second.wait_for(runs(1), timeout_s=WAIT_S)
    assert cloud.reported() == [("hello", 1, "downloaded"), ("hello", 1, "active")]


def test_revoked_device_stops_with_device_revoked(cloud: FakeCloud, device: Device) -> None:
    """A 401 stops the sync threads and leaves DeviceRevoked in the status."""
    assert cloud.stream_opened(1)
    cloud.revoked = True
    cloud.drop_streams()
    status = device.wait_for(lambda s: not s.running, timeout_s=WAIT_S)
    assert isinstance(status.last_error, DeviceRevoked)
    for thread in sync_threads():
        thread.join(WAIT_S)
        assert not thread.is_alive()


def test_stop_ends_the_sync_threads(cloud: FakeCloud, tmp_path: Path) -> None:
    """stop() closes the open stream and joins both background threads."""
    device = make_device(cloud, tmp_path / "device")
    device.start()
    assert cloud.stream_opened(1)
    device.stop()
    assert sync_threads() == []
    assert not device.status().running


def test_installed_tasks_survive_a_restart_offline(cloud: FakeCloud, tmp_path: Path) -> None:
    """With the cloud down, a restarted device still has its installed task."""
    with make_device(cloud, tmp_path / "device") as first:
        cloud.release("hello", 1)
        first.wait_for(runs(1), timeout_s=WAIT_S)
    cloud.down = True
    with make_device(cloud, tmp_path / "device") as second:
        status: DeviceStatus = second.status()
        assert dict(status.installed) == {"hello": 1}
        assert second.task_path("hello") is not None


def test_wait_for_raises_timeout_error(device: Device) -> None:
    """wait_for() gives up with TimeoutError when the condition never holds."""
    with pytest.raises(TimeoutError, match="did not reach"):
        device.wait_for(lambda s: False, timeout_s=0.05)
