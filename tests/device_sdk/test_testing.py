"""device_sdk.testing: a real Device syncs, verifies, runs and uploads against FakeCloud."""

from __future__ import annotations

import base64
import hashlib
import json
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import device_sdk.testing
from device_sdk import Device, DeviceStatus, RegistrationRefused, bundle
from device_sdk.testing import FakeCloud, make_task
from device_sdk.wire import DesiredTask, FileDigest
from tests.task_factories import make_task_dir

WAIT_S = 10.0
SHOP_TASK = Path(__file__).resolve().parents[2] / "examples" / "tasks" / "shop_rerank"
CATALOGUE = [
    {"id": "a", "price": 10.0, "rating": 3.0},
    {"id": "b", "price": 10.0, "rating": 5.0},
]


@pytest.fixture
def fake() -> FakeCloud:
    return FakeCloud()


def device_for(fake: FakeCloud, data_dir: Path) -> Device:
    return Device(
        "http://cloud",
        enrollment_key=fake.enrollment_key,
        data_dir=data_dir,
        transport=fake.transport,
    )


@pytest.fixture
def device(fake: FakeCloud, tmp_path: Path) -> Iterator[Device]:
    with device_for(fake, tmp_path / "device") as started:
        yield started


def runs(task: str, version: int) -> Callable[[DeviceStatus], bool]:
    """The condition: ``version`` of ``task`` is active and its reports were delivered."""
    return lambda s: s.installed.get(task) == version and s.unsent_reports == 0


def failed(fake: FakeCloud, task: str, version: int) -> Callable[[DeviceStatus], bool]:
    return lambda _: (task, version, "failed") in fake.reported()


def test_device_installs_a_deployed_task_predicts_and_reports_active(
    fake: FakeCloud, device: Device
) -> None:
    """A task directory published and deployed on the fake is installed, runs, and is
    reported downloaded then active."""
    version = fake.publish(SHOP_TASK)
    fake.deploy("shop-rerank", version)
    device.wait_for(runs("shop-rerank", version), timeout_s=WAIT_S)
    result = device.predict("shop-rerank", {"items": CATALOGUE, "viewed": []})
    assert result["ranking"] == ["b", "a"]
    assert fake.reported() == [
        ("shop-rerank", version, "downloaded"),
        ("shop-rerank", version, "active"),
    ]


def test_published_bundle_bytes_are_deployed_as_published(
    fake: FakeCloud, device: Device, tmp_path: Path
) -> None:
    """Packed bundle bytes publish like a directory; the device receives those very bytes."""
    _, data = bundle.pack(make_task_dir(tmp_path, name="echo", version=3))
    assert fake.publish(data) == 3
    offered = fake.deploy("echo", 3)
    device.wait_for(runs("echo", 3), timeout_s=WAIT_S)
    assert offered.bundle_sha256 == hashlib.sha256(data).hexdigest()
    assert device.predict("echo", {"q": 1}) == {"echo": {"q": 1}}


def test_altered_bundle_bytes_are_refused_and_the_previous_version_stays(
    fake: FakeCloud, device: Device
) -> None:
    """A bundle whose bytes changed after publishing fails verification; v1 stays active."""
    fake.release("hello", 1)
    device.wait_for(runs("hello", 1), timeout_s=WAIT_S)
    second = fake.release("hello", 2)
    data = fake.blobs[second.bundle_sha256]
    fake.blobs[second.bundle_sha256] = data[:-1] + bytes([data[-1] ^ 0xFF])
    device.wait_for(failed(fake, "hello", 2), timeout_s=WAIT_S)
    assert device.status().installed == {"hello": 1}


def test_manifest_changed_after_signing_is_refused(fake: FakeCloud, device: Device) -> None:
    """Swapping the entry code, with digests that match but the original signature, is
    refused by the device's signature check: nothing of it is installed or run."""
    signed = fake.release("hello", 1, files={"main.py": b"def run(ctx, inputs):\n    return 1\n"})
    device.wait_for(runs("hello", 1), timeout_s=WAIT_S)
    evil = b"def run(ctx, inputs):\n    return 'pwned'\n"
    manifest = signed.manifest.model_copy(
        update={
            "version": 2,
            "files": {
                "main.py": FileDigest(sha256=hashlib.sha256(evil).hexdigest(), size=len(evil))
            },
        }
    )
    data = bundle.build(manifest, {"main.py": evil})
    forged = DesiredTask(
        name="hello",
        version=2,
        deployment_id=99,
        bundle_sha256=hashlib.sha256(data).hexdigest(),
        bundle_size=len(data),
        manifest=manifest,
        signature=signed.signature,
    )
    fake.deploy(forged, data)
    device.wait_for(failed(fake, "hello", 2), timeout_s=WAIT_S)
    assert "signature" in str(fake.reports[-1]["reason"])
    assert device.status().installed == {"hello": 1}
    assert device.predict("hello", {}) == 1


def test_task_signed_by_another_key_is_refused(fake: FakeCloud, device: Device) -> None:
    """A task offered with a signature by a key the device did not pin is refused."""
    fake.deploy(*make_task("hello", 1))
    device.wait_for(failed(fake, "hello", 1), timeout_s=WAIT_S)
    assert device.status().installed == {}


def test_rollback_returns_devices_to_the_previous_version(fake: FakeCloud, device: Device) -> None:
    """Rolling back the latest deployment re-activates the version deployed before it."""
    fake.release("hello", 1)
    device.wait_for(runs("hello", 1), timeout_s=WAIT_S)
    fake.release("hello", 2)
    device.wait_for(runs("hello", 2), timeout_s=WAIT_S)
    assert fake.rollback("hello") == 1
    device.wait_for(runs("hello", 1), timeout_s=WAIT_S)
    assert fake.reported()[-2:] == [("hello", 2, "rolled_back"), ("hello", 1, "active")]


def test_uploads_arrive_once_when_an_answer_is_lost(fake: FakeCloud, device: Device) -> None:
    """Items whose upload answer was lost are sent again and stored once, in order."""
    fake.lost_upload_responses = 1
    keys = [device.queue("events", {"n": n}) for n in range(3)]
    assert device.flush_uploads(timeout_s=WAIT_S)
    received = fake.uploads("events")
    assert [(u.key, u.payload) for u in received] == [(k, {"n": n}) for n, k in enumerate(keys)]
    assert {u.device_id for u in received} == {device.status().device_id}
    assert fake.paths("POST").count("/v1/devices/me/uploads/events") >= 2


def test_wrong_enrollment_key_is_refused(fake: FakeCloud, tmp_path: Path) -> None:
    """A device presenting another enrollment key cannot register."""
    device = Device(
        "http://cloud", enrollment_key="nope", data_dir=tmp_path, transport=fake.transport
    )
    with pytest.raises(RegistrationRefused):
        device.start()


def test_each_device_registers_with_its_own_identity(fake: FakeCloud, tmp_path: Path) -> None:
    """Two devices get two ids, and both receive a deployment."""
    fake.release("hello", 1)
    with (
        device_for(fake, tmp_path / "one") as one,
        device_for(fake, tmp_path / "two") as two,
    ):
        one.wait_for(runs("hello", 1), timeout_s=WAIT_S)
        two.wait_for(runs("hello", 1), timeout_s=WAIT_S)
        assert {one.status().device_id, two.status().device_id} == set(fake.device_ids)
    assert len(fake.device_ids) == 2


def test_published_versions_are_immutable(fake: FakeCloud, tmp_path: Path) -> None:
    """Publishing other bytes as a published version is refused, as the cloud refuses it."""
    fake.publish(make_task_dir(tmp_path, version=1))
    with pytest.raises(ValueError, match="immutable"):
        fake.publish(make_task_dir(tmp_path, version=1, files={"main.py": "X = 2\n"}))


def test_deploying_an_unpublished_version_names_the_published_ones(fake: FakeCloud) -> None:
    """deploy() of a version never published says which versions exist."""
    fake.release("hello", 1)
    with pytest.raises(ValueError, match="published versions are 1"):
        fake.deploy("hello", 2)


def test_the_fake_signs_as_the_cloud_does(fake: FakeCloud) -> None:
    """The signature is Ed25519 over the manifest's canonical JSON, by the advertised key."""
    task = fake.release("hello", 1)
    public = device_sdk.testing.public_key_b64(fake.key)
    assert public == fake.public_key and len(base64.b64decode(public)) == 32
    bundle.verify_signature(task.manifest, task.signature, fake.public_key)


def test_testing_module_loads_no_cloud_dependency() -> None:
    """`import device_sdk.testing` needs nothing beyond the SDK's own dependencies."""
    probe = (
        "import json, sys; import device_sdk.testing; "
        "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules})))"
    )
    loaded = set(json.loads(subprocess.check_output([sys.executable, "-c", probe], text=True)))
    assert loaded & {"cloud", "fastapi", "starlette", "sqlalchemy", "redis", "onnx"} == set()


def test_testing_all_is_sorted_and_resolves() -> None:
    """`device_sdk.testing.__all__` is sorted and every name in it exists."""
    names = device_sdk.testing.__all__
    assert list(names) == sorted(names)
    assert all(hasattr(device_sdk.testing, name) for name in names)
