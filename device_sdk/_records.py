"""What the device keeps about itself: its identity and the task versions it knows."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from pathlib import Path

from device_sdk.wire import DesiredState


class VersionState(StrEnum):
    """Where an installed task version stands on this device."""

    active = "active"  # the version the task runs
    previous = "previous"  # on disk, kept for rollback without a download
    failed = "failed"  # download, verification or install failed; not on disk


@dataclass(frozen=True, slots=True)
class Identity:
    """Who this device is to the cloud, as registration returned it."""

    device_id: str
    token: str
    platform_public_key: str
    cloud_url: str
    registered_at: datetime


@dataclass(frozen=True, slots=True)
class InstalledTask:
    """One task version known to the device: on disk (active or previous) or failed."""

    task: str
    version: int
    bundle_sha256: str
    path: Path | None
    state: VersionState
    reason: str | None
    deployment_id: int | None
    attempts: int
    failed_rev: int | None
    installed_at: datetime | None
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class CachedDesired:
    """The last desired state fetched, with the ETag to revalidate it."""

    etag: str | None
    state: DesiredState
