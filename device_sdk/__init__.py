"""Tandem device SDK: the library an app embeds to run compact models and sync tasks.

Most apps need only :class:`Device`, which syncs tasks, runs them (``predict``) and keeps
the app's events (``track``). The building blocks (the cloud client, the local store, the
installer, the sync agent, the model runner, the task runtime, the event log and the
feature store) are exported too, for tools and tests that drive one piece on its own.
"""

from __future__ import annotations

from device_sdk._anon_embedding import AnonymousEmbedding, EmbeddingError
from device_sdk._backoff import Backoff
from device_sdk._client import CloudClient
from device_sdk._coda import (
    CodaConfig,
    CodaResult,
    LocalSamples,
    PersonalFilter,
    coda_round,
    summarize,
)
from device_sdk._coda_fake import FakePools
from device_sdk._coda_task import CodaLearner, learner_for, register_learner
from device_sdk._device import Device, DeviceStatus
from device_sdk._edge_router import EdgeRouter, LocalDecision
from device_sdk._errors import (
    CloudError,
    CloudRejected,
    CloudUnavailable,
    DeviceRevoked,
    DeviceSDKError,
    IdentityMismatch,
    InvalidBundle,
    InvalidEvent,
    InvalidFeature,
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
from device_sdk._events import Event, EventLog, Feature, FeatureStore, FeaturesView
from device_sdk._federation import LocalExamples, LocalTraining, TrainableModel, train_update
from device_sdk._federation_outbox import UpdateOutbox, UploadSummary, post_update, upload_updates
from device_sdk._installer import Installer
from device_sdk._learning import (
    ActivationCache,
    Backbone,
    Head,
    HeadTraining,
    LearningError,
    backbone_source,
    cached_source,
    log_loss,
    train_head,
)
from device_sdk._outbox import Outbox, OutboxItem
from device_sdk._pipelines import DevicePipelines
from device_sdk._reconcile import ReconcileOutcome, Reconciler
from device_sdk._records import CachedDesired, Identity, InstalledTask, VersionState
from device_sdk._routing import RoutingAgent, RoutingConfig, RoutingNotConfigured
from device_sdk._routing_fake import FakeRouting
from device_sdk._runner import LoadedModel, ModelRunner
from device_sdk._runtime import TaskRuntime
from device_sdk._sse import ServerSentEvent, SSEDecoder
from device_sdk._store import DeviceStore
from device_sdk._sync import SyncAgent
from device_sdk._task_context import TaskContext, TaskFailure, TaskOutput, TaskStats
from device_sdk._task_errors import TaskErrorReporter, task_error_report
from device_sdk._uploader import Uploader
from device_sdk.coda_wire import PoolSample, RetrieveRequest, RetrieveResponse
from device_sdk.wire import DeviceAttributes, DeviceInfo, RegisterDeviceResponse, TaskErrorReport

__all__ = [
    "ActivationCache",
    "AnonymousEmbedding",
    "Backbone",
    "Backoff",
    "CachedDesired",
    "CloudClient",
    "CloudError",
    "CloudRejected",
    "CloudUnavailable",
    "CodaConfig",
    "CodaLearner",
    "CodaResult",
    "Device",
    "DeviceAttributes",
    "DeviceInfo",
    "DevicePipelines",
    "DeviceRevoked",
    "DeviceSDKError",
    "DeviceStatus",
    "DeviceStore",
    "EdgeRouter",
    "EmbeddingError",
    "Event",
    "EventLog",
    "EventStream",
    "FakePools",
    "FakeRouting",
    "Feature",
    "FeatureStore",
    "FeaturesView",
    "Head",
    "HeadTraining",
    "Identity",
    "IdentityMismatch",
    "InstalledTask",
    "Installer",
    "InvalidBundle",
    "InvalidEvent",
    "InvalidFeature",
    "InvalidModelInput",
    "InvalidPayload",
    "InvalidSignature",
    "LearningError",
    "LoadedModel",
    "LocalDecision",
    "LocalExamples",
    "LocalSamples",
    "LocalStoreError",
    "LocalTraining",
    "ModelRunner",
    "Outbox",
    "OutboxFull",
    "OutboxItem",
    "PersonalFilter",
    "PoolSample",
    "ReconcileOutcome",
    "Reconciler",
    "RegisterDeviceResponse",
    "RegistrationRefused",
    "RetrieveRequest",
    "RetrieveResponse",
    "RoutingAgent",
    "RoutingConfig",
    "RoutingNotConfigured",
    "SSEDecoder",
    "ServerSentEvent",
    "SyncAgent",
    "TaskContext",
    "TaskErrorReport",
    "TaskErrorReporter",
    "TaskFailed",
    "TaskFailure",
    "TaskNotInstalled",
    "TaskOutput",
    "TaskRuntime",
    "TaskStats",
    "TaskTimeout",
    "TrainableModel",
    "UnknownModel",
    "UpdateOutbox",
    "UploadRejected",
    "UploadSummary",
    "Uploader",
    "VersionState",
    "backbone_source",
    "cached_source",
    "coda_round",
    "learner_for",
    "log_loss",
    "post_update",
    "register_learner",
    "summarize",
    "task_error_report",
    "train_head",
    "train_update",
    "upload_updates",
]
