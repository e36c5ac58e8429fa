"""Tandem device SDK: the library an app embeds to run compact models and sync tasks.

Most apps need only :class:`Device`, which syncs tasks and runs them (``predict``). The
building blocks (the cloud client, the local store, the installer, the sync agent, the
model runner and the task runtime) are exported too, for tools and tests that drive one
piece on its own.
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
    InvalidModelInput,
    InvalidPayload,
    InvalidSignature,
    LocalStoreError,
    OutboxFull,
    RegistrationRefused,
    TaskFailed,
    TaskNotInstalled,
    TaskTimeout,
    UnknownModel,
    UploadRejected,
)
from device_sdk._event_stream import EventStream
from device_sdk._installer import Installer
from device_sdk._outbox import Outbox, OutboxItem
from device_sdk._reconcile import ReconcileOutcome, Reconciler
from device_sdk._records import CachedDesired, Identity, InstalledTask, VersionState
from device_sdk._runner import LoadedModel, ModelRunner
from device_sdk._runtime import TaskContext, TaskOutput, TaskRuntime, TaskStats
from device_sdk._sse import ServerSentEvent, SSEDecoder
from device_sdk._store import DeviceStore
from device_sdk._sync import SyncAgent
from device_sdk._uploader import UploadClient, Uploader
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
    "InvalidModelInput",
    "InvalidPayload",
    "InvalidSignature",
    "LoadedModel",
    "LocalStoreError",
    "ModelRunner",
    "Outbox",
    "OutboxFull",
    "OutboxItem",
    "ReconcileOutcome",
    "Reconciler",
    "RegisterDeviceResponse",
    "RegistrationRefused",
    "SSEDecoder",
    "ServerSentEvent",
    "SyncAgent",
    "TaskContext",
    "TaskFailed",
    "TaskNotInstalled",
    "TaskOutput",
    "TaskRuntime",
    "TaskStats",
    "TaskTimeout",
    "UnknownModel",
    "UploadClient",
    "UploadRejected",
    "Uploader",
    "VersionState",
]
