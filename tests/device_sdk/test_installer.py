"""Atomic installs: verify first, stage, rename, flip in one transaction; rollback; GC."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from device_sdk import DeviceStore, Installer, InvalidBundle, InvalidSignature, VersionState
from device_sdk.wire import DesiredTask
from tests.device_sdk.fake_cloud import make_task, public_key_b64

KEY = Ed25519PrivateKey.generate()
PUBLIC = public_key_b64(KEY)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[DeviceStore]:
    opened = DeviceStore(tmp_path / "device.db")
    yield opened
    opened.close()


@pytest.fixture
def installer(tmp_path: Path, store: DeviceStore) -> Installer:
    return Installer(tmp_path, store)


def install(installer: Installer, version: int) -> tuple[DesiredTask, Path]:
    task, data = make_task("hello", version, key=KEY)
    return task, installer.install(task, data, public_key=PUBLIC)


def leftovers(installer: Installer) -> list[str]:
    return sorted(p.name for p in (installer.tasks_dir / "hello").iterdir())


def test_install_unpacks_files_and_activates(installer: Installer, store: DeviceStore) -> None:
    """An installed version's files and manifest sit in tasks/<name>/<version>, active."""
    _, path = install(installer, 1)
    assert path == installer.tasks_dir / "hello" / "1"
    assert (path / "main.py").read_text() == "VERSION = 1\n"
    assert (path / "manifest.json").is_file()
    assert store.active_versions() == {"hello": 1}


def test_failure_mid_install_keeps_the_previous_version(
    installer: Installer, store: DeviceStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A rename that fails leaves version 1 active and whole, and no staging directory."""
    install(installer, 1)

    def broken_replace(source: object, target: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError, match="No space"):
        install(installer, 2)
    assert store.active_versions() == {"hello": 1}
    assert leftovers(installer) == ["1"]
    assert (installer.tasks_dir / "hello" / "1" / "main.py").read_text() == "VERSION = 1\n"


def test_failure_to_record_activation_removes_the_new_files(
    installer: Installer, store: DeviceStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """If the store cannot flip the active version, the unpacked version is removed."""
    install(installer, 1)

    def broken_activate(*args: object, **kwargs: object) -> None:
        raise OSError("database is locked")

    monkeypatch.setattr(store, "activate", broken_activate)
    with pytest.raises(OSError, match="locked"):
        install(installer, 2)
    monkeypatch.undo()
    assert store.active_versions() == {"hello": 1}
    assert leftovers(installer) == ["1"]


def test_tampered_bundle_is_rejected_before_anything_is_written(
    installer: Installer, store: DeviceStore
) -> None:
    """A bundle whose bytes changed is refused and nothing lands on disk."""
    install(installer, 1)
    task, data = make_task("hello", 2, key=KEY)
    tampered = data[:-1] + bytes([data[-1] ^ 0xFF])
    with pytest.raises(InvalidBundle):
        installer.install(task, tampered, public_key=PUBLIC)
    assert store.active_versions() == {"hello": 1}
    assert leftovers(installer) == ["1"]


def test_bundle_signed_by_another_key_is_rejected(installer: Installer, store: DeviceStore) -> None:
    """A manifest signed by a key other than the pinned one is refused."""
    task, data = make_task("hello", 1, key=Ed25519PrivateKey.generate())
    with pytest.raises(InvalidSignature):
        installer.install(task, data, public_key=PUBLIC)
    assert store.active_versions() == {}


def test_offer_under_another_name_is_rejected(installer: Installer, store: DeviceStore) -> None:
    """A signed bundle of task 'hello' offered as task 'other' is refused."""
    task, data = make_task("hello", 1, key=KEY)
    with pytest.raises(InvalidBundle, match="'other'"):
        installer.install(task.model_copy(update={"name": "other"}), data, public_key=PUBLIC)
    assert store.active_versions() == {}


def test_reactivate_rolls_back_without_the_bundle(installer: Installer, store: DeviceStore) -> None:
    """Version 1, kept as previous, becomes active again from its files on disk."""
    install(installer, 1)
    install(installer, 2)
    previous = store.version("hello", 1)
    assert previous is not None and previous.state is VersionState.previous
    installer.reactivate(previous, deployment_id=7)
    assert store.active_versions() == {"hello": 1}
    assert leftovers(installer) == ["1", "2"]


def test_gc_keeps_only_active_and_one_previous(installer: Installer, store: DeviceStore) -> None:
    """After versions 1, 2 and 3, version 1's files and record are gone."""
    for version in (1, 2, 3):
        install(installer, version)
    assert leftovers(installer) == ["2", "3"]
    assert [(v.version, v.state) for v in store.versions("hello")] == [
        (2, VersionState.previous),
        (3, VersionState.active),
    ]


def test_deactivate_keeps_the_files_as_previous(installer: Installer, store: DeviceStore) -> None:
    """A task no longer wanted stops being active but stays on disk for a rollback."""
    install(installer, 1)
    installer.deactivate("hello")
    assert store.active_versions() == {}
    assert leftovers(installer) == ["1"]


def test_sweep_removes_what_a_crash_left_behind(installer: Installer) -> None:
    """Staging directories and unrecorded version directories are removed by sweep()."""
    install(installer, 1)
    os.makedirs(installer.tasks_dir / "hello" / ".staging-abc" / "sub")
    os.makedirs(installer.tasks_dir / "hello" / "9")
    installer.sweep()
    assert leftovers(installer) == ["1"]
