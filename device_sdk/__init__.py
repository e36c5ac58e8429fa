"""Tandem device SDK: the library an app embeds to run compact models and sync tasks.

Most apps need only :class:`Device`. The sync's building blocks (the cloud client, the
local store, the installer, the agent) are exported too, for tools and tests that drive
one piece on its own.
"""

from __future__ import annotations

from device_sdk._backoff import Backoff
from device_sdk._client import CloudClient
from device_sdk._device import Device, DeviceStatus
from device_sdk._errors import (
    CloudError,
    CloudRejected,
    CloudUnavailable,
    DeviceRevoked,
    DeviceSDKError,
    IdentityMismatch,
    InvalidBundle,
    InvalidSignature,
    LocalStoreError,
    RegistrationRefused,
)
from device_sdk._event_stream import EventStream
from device_sdk._installer import Installer
from device_sdk._reconcile import ReconcileOutcome, Reconciler
from device_sdk._records import CachedDesired, Identity, InstalledTask, VersionState
from device_sdk._sse import ServerSentEvent, SSEDecoder
from device_sdk._store import DeviceStore
from device_sdk._sync import SyncAgent
from device_sdk.wire import DeviceAttributes, DeviceInfo, RegisterDeviceResponse

__all__ = [
    "Backoff",
    "CachedDesired",
    "CloudClient",
    "CloudError",
    "CloudRejected",
    "CloudUnavailable",
    "Device",
    "DeviceAttributes",
    "DeviceInfo",
    "DeviceRevoked",
    "DeviceSDKError",
    "DeviceStatus",
    "DeviceStore",
    "EventStream",
    "Identity",
    "IdentityMismatch",
    "InstalledTask",
    "Installer",
    "InvalidBundle",
    "InvalidSignature",
    "LocalStoreError",
    "ReconcileOutcome",
    "Reconciler",
    "RegisterDeviceResponse",
    "RegistrationRefused",
    "SSEDecoder",
    "ServerSentEvent",
    "SyncAgent",
    "VersionState",
]
