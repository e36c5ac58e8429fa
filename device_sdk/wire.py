"""The wire contract: every request and response that crosses between a device and the cloud.

Both sides import these pydantic schemas, so a field renamed here is renamed everywhere.
Requests refuse unknown fields (a typo is an error, not a silent no-op); responses ignore
unknown fields so an older SDK keeps working against a newer cloud.
"""

from __future__ import annotations

import json
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator

# Text the cloud stores or queries by holds no control characters: PostgreSQL text cannot
# hold NUL, and none belongs in a one-line value. Multi-line text may keep tab, LF and CR.
ONE_LINE_PATTERN = r"^[^\x00-\x1f\x7f]*$"
_MULTILINE_PATTERN = r"^[^\x00-\x08\x0b\x0c\x0e-\x1f\x7f]*$"

Tag = Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._:-]+$")]
ShortText = Annotated[
    str,
    StringConstraints(min_length=1, max_length=32, strip_whitespace=True, pattern=ONE_LINE_PATTERN),
]
_DeviceModelText = Annotated[
    str,
    StringConstraints(min_length=1, max_length=64, strip_whitespace=True, pattern=ONE_LINE_PATTERN),
]


class Request(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Response(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class DeviceAttributes(Request):
    """What a device says about itself; deployments target devices by these."""

    platform: ShortText | None = Field(default=None, examples=["android"])
    os_version: ShortText | None = Field(default=None, examples=["14.1"])
    app_version: ShortText | None = Field(default=None, examples=["5.2.0"])
    model: _DeviceModelText | None = Field(default=None, examples=["Pixel 8"])
    region: ShortText | None = Field(default=None, examples=["eu-west"])
    tags: Annotated[list[Tag], Field(max_length=32)] = Field(default_factory=list)


class RegisterDeviceRequest(Request):
    enrollment_key: Annotated[str, StringConstraints(min_length=1, max_length=256)]
    attributes: DeviceAttributes = Field(default_factory=DeviceAttributes)


class DeviceInfo(Response):
    device_id: str
    attributes: DeviceAttributes
    created_at: datetime
    last_seen: datetime


class RegisterDeviceResponse(DeviceInfo):
    """The device's identity. ``token`` is shown once; the cloud keeps only its hash.

    ``platform_public_key`` (base64 of the raw 32-byte Ed25519 key) is pinned by the device:
    every task manifest it installs must carry a valid signature by this key.
    """

    token: str
    platform_public_key: str


class ErrorDetail(Response):
    code: str
    message: str
    details: object | None = None


class ErrorBody(Response):
    error: ErrorDetail


# --- Tasks: bundles, manifests, desired state, status -------------------------------------

TaskName = Annotated[
    str, StringConstraints(min_length=1, max_length=64, pattern=r"^[a-z0-9][a-z0-9._-]*$")
]
BundlePath = Annotated[
    str,
    StringConstraints(
        min_length=1,
        max_length=200,
        pattern=r"^[A-Za-z0-9_][A-Za-z0-9._-]*(/[A-Za-z0-9_][A-Za-z0-9._-]*)*$",
    ),
]
Sha256 = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]
MANIFEST_NAME = "manifest.json"


class Manifest(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TriggerKind(StrEnum):
    predict = "predict"  # runs when the app calls Device.predict(task, ...)
    schedule = "schedule"  # runs every `every_s` seconds
    event = "event"  # runs when a pipeline trigger named `pattern` fires


class Trigger(Manifest):
    kind: TriggerKind = TriggerKind.predict
    every_s: Annotated[int, Field(ge=1, le=30 * 86400)] | None = None
    pattern: Annotated[str, StringConstraints(min_length=1, max_length=64)] | None = None


class ResourceLimits(Manifest):
    timeout_ms: Annotated[int, Field(ge=1, le=600_000)] = 1000
    max_concurrency: Annotated[int, Field(ge=1, le=64)] = 1
    max_memory_mb: Annotated[int, Field(ge=1, le=65_536)] | None = None


class ModelRef(Manifest):
    """A model file in the bundle, under the name the task's code uses for it."""

    name: Annotated[str, StringConstraints(min_length=1, max_length=64)]
    file: BundlePath


class FileDigest(Manifest):
    sha256: Sha256
    size: Annotated[int, Field(ge=0)]


class TaskManifest(Manifest):
    """What a task bundle holds. The cloud signs its canonical JSON; devices verify it."""

    schema_version: Literal[1] = 1
    name: TaskName
    version: Annotated[int, Field(ge=1, le=2**31 - 1)]
    description: Annotated[str, StringConstraints(max_length=500)] = ""
    trigger: Trigger = Field(default_factory=Trigger)
    pipeline: dict[str, Any] | None = None
    models: Annotated[list[ModelRef], Field(max_length=32)] = Field(default_factory=list)
    entry: BundlePath | None = None
    resources: ResourceLimits = Field(default_factory=ResourceLimits)
    files: Annotated[dict[BundlePath, FileDigest], Field(max_length=1000)] = Field(
        default_factory=dict
    )

    def canonical_bytes(self) -> bytes:
        """The exact bytes that are signed: sorted keys, no whitespace, UTF-8."""
        return canonical_json(self.model_dump(mode="json"))


def canonical_json(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


class DesiredTask(Response):
    name: str
    version: int
    deployment_id: int
    bundle_sha256: str
    bundle_size: int
    manifest: TaskManifest
    signature: str = Field(description="base64 Ed25519 signature of the manifest's canonical JSON")


class DesiredState(Response):
    """Everything the device should run: one version per task. ``rev`` grows on each change."""

    rev: int
    tasks: list[DesiredTask]


class Nudge(Response):
    """The push: sent on the device's event stream when its desired state changed."""

    desired_rev: int


class TaskState(StrEnum):
    downloaded = "downloaded"
    active = "active"
    failed = "failed"
    rolled_back = "rolled_back"


class StatusReport(Request):
    task: TaskName
    version: Annotated[int, Field(ge=1, le=2**31 - 1)]
    state: TaskState
    reason: Annotated[str, StringConstraints(max_length=500, pattern=_MULTILINE_PATTERN)] | None = (
        None
    )
    deployment_id: Annotated[int, Field(ge=1, le=2**31 - 1)] | None = None


class StatusReports(Request):
    """Several reports in one request, e.g. `downloaded` and `active` for one release."""

    reports: Annotated[list[StatusReport], Field(min_length=1, max_length=100)]


# --- Uploads: outbox items a device sends to the cloud -------------------------------------


class UploadChannel(StrEnum):
    """What an upload is for; each channel has its own endpoint and storage on the cloud."""

    # Raw event batches, for cloud-side backfill and comparison of pipelines (opt-in).
    events = "events"
    # Compact reports of task calls that failed or timed out (see TaskErrorReport).
    task_errors = "task_errors"


MAX_UPLOAD_ITEMS = 500
"""The most items one upload request may carry."""
MAX_UPLOAD_PAYLOAD_BYTES = 64 * 1024
"""The largest payload, measured as its compact UTF-8 JSON (see :func:`payload_json`)."""
MAX_UPLOAD_BODY_BYTES = 4 * 1024 * 1024
"""The largest upload request body the cloud reads; a bigger one is answered 413."""

UploadKey = Annotated[
    str,
    StringConstraints(pattern=r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"),
]


def payload_json(payload: dict[str, Any]) -> bytes:
    """The one encoding both sides size a payload by: compact UTF-8 JSON.

    Raises ``ValueError`` for what JSON cannot carry: NaN, Infinity, lone surrogates
    (not UTF-8), values of other types than JSON's.
    """
    try:
        text = json.dumps(payload, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
        return text.encode()
    except (TypeError, RecursionError) as exc:
        raise ValueError(f"the payload is not JSON-serialisable ({exc})") from exc
    except UnicodeEncodeError as exc:
        raise ValueError(
            f"the payload holds text that is not valid Unicode ({exc.reason})"
        ) from exc


class UploadItem(Request):
    """One outbox item. ``key`` (a lowercase UUID) makes a retried item count once."""

    key: UploadKey
    payload: dict[str, Any]

    @field_validator("payload")
    @classmethod
    def _bounded(cls, payload: dict[str, Any]) -> dict[str, Any]:
        size = len(payload_json(payload))
        if size > MAX_UPLOAD_PAYLOAD_BYTES:
            raise ValueError(
                f"the payload is {size} bytes as compact JSON; at most "
                f"{MAX_UPLOAD_PAYLOAD_BYTES} are accepted"
            )
        return payload


class UploadBatch(Request):
    """Items of one channel, in the order the device queued them."""

    items: Annotated[list[UploadItem], Field(min_length=1, max_length=MAX_UPLOAD_ITEMS)]


class UploadAccepted(Response):
    """``accepted`` items were new; ``duplicates`` were stored before (a retried batch)."""

    accepted: int
    duplicates: int


MAX_ERROR_MESSAGE_CHARS = 500
"""The longest error message a task error report carries; longer ones are cut."""


class TaskErrorReport(Request):
    """The payload of a ``task_errors`` upload: one task call that failed on a device.

    ``kind`` is ``exception`` (the task raised) or ``timeout`` (it ran past its limit);
    ``error_type`` and ``message`` describe the error (the message cut to
    ``MAX_ERROR_MESSAGE_CHARS``); ``trigger`` says why the call ran; ``ts`` is when it
    failed (seconds since the epoch, device clock). Devices send at most one report per
    task version and kind in a while: ``suppressed`` counts the failures of that kind held
    back since the last report.
    """

    task: TaskName
    version: Annotated[int, Field(ge=1, le=2**31 - 1)] | None
    kind: Literal["exception", "timeout"]
    error_type: Annotated[str, StringConstraints(min_length=1, max_length=200)]
    message: Annotated[
        str, StringConstraints(max_length=MAX_ERROR_MESSAGE_CHARS, pattern=_MULTILINE_PATTERN)
    ]
    trigger: Literal["predict", "schedule", "event"]
    ts: float
    suppressed: Annotated[int, Field(ge=0)] = 0
