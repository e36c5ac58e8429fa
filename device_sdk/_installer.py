"""Installing verified task bundles atomically, keeping one previous version for rollback.

A version's files are written into ``<data_dir>/tasks/<name>/.staging-<random>/``, each
file and directory fsynced, then renamed into place as ``<data_dir>/tasks/<name>/<version>/``
with one ``os.replace``; only then does one store transaction make it the active version.
A crash or an error at any step leaves the previously active version active and whole;
what is left half-done (a staging directory, a renamed directory no row points at) is
removed by the next garbage collection.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path

from device_sdk._errors import InvalidBundle
from device_sdk._records import InstalledTask, VersionState
from device_sdk._store import DeviceStore
from device_sdk.bundle import Bundle, read_verified
from device_sdk.wire import MANIFEST_NAME, DesiredTask, StatusReport

_STAGING = ".staging-"


def _fsync_dir(directory: Path) -> None:
    # A file's fsync does not make its directory entry durable; the directory needs its own.
    if os.name != "posix":
        return  # other systems cannot open a directory for fsync
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Installer:
    """Installs, re-activates and garbage-collects task versions under ``data_dir/tasks``."""

    def __init__(self, data_dir: Path, store: DeviceStore) -> None:
        self.tasks_dir = data_dir / "tasks"
        self._store = store

    def install(
        self,
        task: DesiredTask,
        data: bytes,
        *,
        public_key: str,
        reports: Sequence[StatusReport] = (),
    ) -> Path:
        """Verify ``data`` as the bundle of ``task``, install it and make it active.

        Nothing in the bundle is written before its digest, signature and files verify
        against ``public_key``. ``reports`` are queued in the same transaction as the
        activation. Raises :class:`InvalidBundle` (or :class:`InvalidSignature`) for a bad
        bundle and ``OSError`` for a failed write; either way the active version stays.
        """
        bundle = read_verified(
            data,
            expected_sha256=task.bundle_sha256,
            signed_manifest=task.manifest,
            signature_b64=task.signature,
            public_key_b64=public_key,
        )
        if (bundle.manifest.name, bundle.manifest.version) != (task.name, task.version):
            raise InvalidBundle(
                f"The cloud offered task {task.name!r} version {task.version}, but the signed "
                f"bundle is {bundle.manifest.name!r} version {bundle.manifest.version}; "
                "it was not installed."
            )
        final = self._unpack(bundle)
        try:
            self._store.activate(
                task.name,
                task.version,
                bundle_sha256=task.bundle_sha256,
                path=final,
                deployment_id=task.deployment_id,
                reports=reports,
            )
        except BaseException:
            shutil.rmtree(final, ignore_errors=True)
            raise
        self.collect_garbage(task.name)
        return final

    def reactivate(
        self,
        installed: InstalledTask,
        *,
        deployment_id: int | None,
        reports: Sequence[StatusReport] = (),
    ) -> None:
        """Make an installed (``previous``) version active again, without a download."""
        if installed.path is None or not installed.path.is_dir():
            raise InvalidBundle(
                f"Task {installed.task!r} version {installed.version} is not on disk any more."
            )
        self._store.activate(
            installed.task,
            installed.version,
            bundle_sha256=installed.bundle_sha256,
            path=installed.path,
            deployment_id=deployment_id,
            reports=reports,
        )
        self.collect_garbage(installed.task)

    def deactivate(self, task: str) -> None:
        """Stop running ``task``; its files stay as the previous version."""
        self._store.deactivate(task)
        self.collect_garbage(task)

    def collect_garbage(self, task: str) -> None:
        """Keep the active and the most recent previous version of ``task``; remove the rest
        (older versions, staging directories, directories no record points at)."""
        versions = self._store.versions(task)
        previous = sorted(
            (v for v in versions if v.state is VersionState.previous),
            key=lambda v: v.updated_at,
            reverse=True,
        )
        for old in previous[1:]:
            # Record first, files second: a crash in between leaves an orphan directory
            # (swept later), never a record pointing at half-deleted files.
            self._store.forget(task, old.version)
            if old.path is not None:
                shutil.rmtree(old.path, ignore_errors=True)
        kept = {
            v.path.name
            for v in versions
            if v.path is not None and (v.state is VersionState.active or v in previous[:1])
        }
        task_dir = self.tasks_dir / task
        if not task_dir.is_dir():
            return
        for entry in task_dir.iterdir():
            if entry.name not in kept:
                shutil.rmtree(entry, ignore_errors=True)

    def sweep(self) -> None:
        """Collect garbage for every task on disk, e.g. after a crash mid-install."""
        if not self.tasks_dir.is_dir():
            return
        for entry in self.tasks_dir.iterdir():
            if entry.is_dir():
                self.collect_garbage(entry.name)

    def _unpack(self, bundle: Bundle) -> Path:
        task_dir = self.tasks_dir / bundle.manifest.name
        self._make_dirs(task_dir)
        staging = Path(tempfile.mkdtemp(prefix=_STAGING, dir=task_dir))
        try:
            files = {MANIFEST_NAME: bundle.manifest.canonical_bytes(), **bundle.files}
            directories = {staging}
            for name, content in files.items():
                path = staging / name
                directories.update(p for p in path.parents if staging in p.parents)
                path.parent.mkdir(parents=True, exist_ok=True)
                with path.open("xb") as file:
                    file.write(content)
                    file.flush()
                    os.fsync(file.fileno())
            for directory in sorted(directories, key=lambda d: len(d.parts), reverse=True):
                _fsync_dir(directory)
            final = task_dir / str(bundle.manifest.version)
            if final.exists():
                shutil.rmtree(final)  # left by an install that crashed before activation
            os.replace(staging, final)
            _fsync_dir(task_dir)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        return final

    def _make_dirs(self, directory: Path) -> None:
        if directory.is_dir():
            return
        self._make_dirs(directory.parent)
        directory.mkdir(exist_ok=True)
        _fsync_dir(directory.parent)
