"""One reconcile pass: make the installed tasks equal to the cloud's desired state.

A pass costs at most one ``GET desired`` (``If-None-Match``, usually answered 304), one
download per bundle the device lacks, and one status ``POST`` carrying every report not
yet delivered (``downloaded`` and ``active`` of a release travel together). A version kept
on disk is re-activated without a download. A version that failed verification or
install is reported ``failed`` and not retried until the desired state changes or its
retry delay (doubling from ``failed_retry_s``) has passed.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from pydantic import ValidationError

from device_sdk._client import CloudClient
from device_sdk._errors import CloudRejected, CloudUnavailable, DeviceRevoked, InvalidBundle
from device_sdk._installer import Installer
from device_sdk._records import InstalledTask, VersionState
from device_sdk._store import DeviceStore
from device_sdk.wire import DesiredState, DesiredTask, StatusReport, TaskState

log = logging.getLogger("device_sdk.sync")

_SHA256 = re.compile(r"[0-9a-f]{64}")
_MAX_REPORTS = 100  # per request, as StatusReports allows


@dataclass(frozen=True, slots=True)
class ReconcileOutcome:
    """What one pass found: the desired revision, the first task failure (if any), and
    the seconds until a failed version is due for a retry (None if none is waiting)."""

    rev: int
    failure: Exception | None
    retry_in_s: float | None


class Reconciler:
    """Runs reconcile passes for one device; the caller decides when (see SyncAgent).

    Raises :class:`CloudUnavailable` when the cloud cannot be reached (what was done so
    far is kept; the next pass goes on from there) and :class:`DeviceRevoked` on a 401.
    """

    def __init__(
        self,
        client: CloudClient,
        store: DeviceStore,
        installer: Installer,
        *,
        downloads_dir: Path,
        public_key: str,
        failed_retry_s: float = 300.0,
        failed_retry_max_s: float = 21600.0,
    ) -> None:
        self._client = client
        self._store = store
        self._installer = installer
        self._downloads = downloads_dir
        self._public_key = public_key
        self._failed_retry_s = failed_retry_s
        self._failed_retry_max_s = failed_retry_max_s

    def reconcile(self) -> ReconcileOutcome:
        """One pass: fetch the desired state, converge on it, deliver status reports."""
        cached = self._store.cached_desired()
        state, etag = self._client.desired(None if cached is None else cached.etag)
        if state is None and cached is not None:
            state = cached.state
        elif state is None:
            state, etag = self._client.desired(None)
        if state is None:
            raise CloudUnavailable("The cloud answered 304 to an unconditional request.")
        if cached is None or cached.etag != etag or cached.state != state:
            self._store.save_desired(state, etag)
        failure: Exception | None = None
        for task in state.tasks:
            failure = self._converge(task, state.rev) or failure
        desired = {task.name: task.version for task in state.tasks}
        for name, running in self._store.active_versions().items():
            if name not in desired:
                # The cloud took the task away (its deployment was rolled back): say so.
                self._store.queue_reports(self._left(name, running))
                self._installer.deactivate(name)
        for version in self._store.versions():
            if (
                version.state is VersionState.failed
                and desired.get(version.task) != version.version
            ):
                self._store.forget(version.task, version.version)
        self._drop_stale_downloads(state)
        self.deliver_reports()
        return ReconcileOutcome(state.rev, failure, self._next_retry(state))

    def _drop_stale_downloads(self, state: DesiredState) -> None:
        """Remove partial downloads nothing will resume: installed, or no longer wanted."""
        if not self._downloads.is_dir():
            return
        active = self._store.active_versions()
        wanted = {
            f"{task.bundle_sha256}.part"
            for task in state.tasks
            if active.get(task.name) != task.version
        }
        for partial in self._downloads.iterdir():
            if partial.name not in wanted:
                partial.unlink(missing_ok=True)

    def _converge(self, task: DesiredTask, rev: int) -> Exception | None:
        installed = self._store.version(task.name, task.version)
        if installed is not None and installed.path is not None and installed.path.is_dir():
            if installed.state is VersionState.active:
                return None
            if installed.state is VersionState.previous:
                running = self._store.active_versions().get(task.name)
                left = self._left(task.name, running) if running is not None else []
                self._installer.reactivate(
                    installed,
                    deployment_id=task.deployment_id,
                    reports=[*left, *_reports(task, TaskState.active)],
                )
                log.info("task %s: version %d re-activated", task.name, task.version)
                return None
        failed = installed is not None and installed.state is VersionState.failed
        if failed and installed is not None and not self._retry_due(installed, rev):
            return None
        partial = self._downloads / f"{task.bundle_sha256}.part"
        try:
            if not _SHA256.fullmatch(task.bundle_sha256) or task.name != task.manifest.name:
                raise InvalidBundle(
                    f"The cloud's offer of task {task.name!r} is malformed (bundle digest "
                    f"{task.bundle_sha256[:80]!r}, manifest name {task.manifest.name!r})."
                )
            data = self._client.download(task.bundle_sha256, task.bundle_size, partial)
            self._installer.install(
                task,
                data,
                public_key=self._public_key,
                reports=_reports(task, TaskState.downloaded, TaskState.active),
            )
        except (CloudUnavailable, DeviceRevoked):
            raise  # about the connection, not this version: the pass is retried as a whole
        except Exception as exc:  # a bad bundle, a 404, a full disk: this version failed
            partial.unlink(missing_ok=True)
            log.warning("task %s version %d failed: %s", task.name, task.version, exc)
            self._store.record_failure(
                task.name,
                task.version,
                bundle_sha256=task.bundle_sha256,
                reason=str(exc),
                desired_rev=rev,
                deployment_id=task.deployment_id,
                reports=_reports(task, TaskState.failed, reason=str(exc)),
            )
            return exc
        partial.unlink(missing_ok=True)
        log.info("task %s: version %d installed and active", task.name, task.version)
        return None

    def _left(self, task: str, version: int) -> list[StatusReport]:
        """A `rolled_back` report for the version this device stops running."""
        installed = self._store.version(task, version)
        deployment_id = installed.deployment_id if installed is not None else None
        return [
            StatusReport(
                task=task,
                version=version,
                state=TaskState.rolled_back,
                reason="the cloud's desired state no longer includes this version",
                deployment_id=deployment_id,
            )
        ]

    def deliver_reports(self) -> None:
        """Send every queued status report, oldest first, in as few requests as allowed."""
        while pending := self._store.pending_reports(_MAX_REPORTS):
            try:
                self._client.report([report for _, report in pending])
            except CloudRejected as exc:
                if isinstance(exc, DeviceRevoked):
                    raise
                # The cloud will never take these (e.g. 422); keeping them would block the rest.
                log.warning("dropping %d status reports the cloud refused: %s", len(pending), exc)
            self._store.delete_reports([report_id for report_id, _ in pending])
            if len(pending) < _MAX_REPORTS:
                return

    def _retry_wait(self, failed: InstalledTask) -> float:
        doubled = self._failed_retry_s * 2.0 ** min(failed.attempts - 1, 30)
        return min(doubled, self._failed_retry_max_s)

    def _retry_due(self, failed: InstalledTask, rev: int) -> bool:
        if failed.failed_rev != rev:
            return True  # the desired state changed since: maybe the cloud fixed something
        elapsed = (datetime.now(UTC) - failed.updated_at).total_seconds()
        return elapsed >= self._retry_wait(failed)

    def _next_retry(self, state: DesiredState) -> float | None:
        waits = []
        for task in state.tasks:
            failed = self._store.version(task.name, task.version)
            if failed is not None and failed.state is VersionState.failed:
                elapsed = (datetime.now(UTC) - failed.updated_at).total_seconds()
                waits.append(max(0.0, self._retry_wait(failed) - elapsed))
        return min(waits, default=None)


def _reports(
    task: DesiredTask, *states: TaskState, reason: str | None = None
) -> list[StatusReport]:
    try:
        return [
            StatusReport(
                task=task.name,
                version=task.version,
                state=state,
                reason=None if reason is None else reason[:500],
                deployment_id=task.deployment_id,
            )
            for state in states
        ]
    except ValidationError:
        return []  # a task name the cloud cannot have meant; nothing to report it under
