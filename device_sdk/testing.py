"""Test your app without a cloud: :class:`FakeCloud`, an in-process fake of the device API.

Pass ``fake.transport`` to a :class:`~device_sdk.Device` and it registers, syncs, installs
and uploads exactly as it would against ``tandem serve``, with no server and no network::

    from device_sdk import Device
    from device_sdk.testing import FakeCloud

    def test_my_app_ranks_with_the_deployed_task(tmp_path):
        fake = FakeCloud()
        version = fake.publish("tasks/rerank")  # a task directory, or packed bundle bytes
        fake.deploy("rerank", version)
        with Device(
            "http://cloud",
            enrollment_key=fake.enrollment_key,
            data_dir=tmp_path,
            transport=fake.transport,
        ) as device:
            device.wait_for(lambda s: s.installed.get("rerank") == version, timeout_s=10)
            assert device.predict("rerank", {"items": [1, 2]}) == ...

The fake is honest where it matters: it speaks the wire schemas of :mod:`device_sdk.wire`
(requests are validated as the cloud validates them; errors have the cloud's shape), and
it signs each published manifest's canonical JSON with its own Ed25519 key, as the cloud
does, handing the public key to devices at registration. A device accepts the fake's
bundles only through its real verification, so a tampered bundle is refused here too.

What it keeps is simple: one desired state for every registered device (a deployment
reaches the whole fleet at once, with no stages or targeting), bundles kept in memory,
and every request recorded. Knobs make it fail the ways a real cloud does: ``down``,
``revoked``, ``status_failures``, ``cut_next_download_at``, ``lost_upload_responses``.
"""

from __future__ import annotations

import base64
import hashlib
import itertools
import os
import queue
import re
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, overload

import httpx
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from pydantic import BaseModel, ValidationError

from device_sdk import bundle
from device_sdk._coda_fake import FakePools
from device_sdk._routing_fake import FakeRouting
from device_sdk.wire import (
    MAX_UPLOAD_BODY_BYTES,
    DesiredState,
    DesiredTask,
    DeviceAttributes,
    FileDigest,
    RegisterDeviceRequest,
    RegisterDeviceResponse,
    StatusReports,
    TaskManifest,
    UploadAccepted,
    UploadBatch,
    UploadChannel,
)

__all__ = [
    "DEVICE_ID",
    "DEVICE_TOKEN",
    "ENROLLMENT_KEY",
    "FakeCloud",
    "ReceivedUpload",
    "RecordedRequest",
    "make_task",
    "public_key_b64",
    "sign_manifest",
]

ENROLLMENT_KEY = "enroll-0123456789"
"""The enrollment key a :class:`FakeCloud` accepts unless given another."""
DEVICE_ID = "dev-1"
"""The id of the first device that registers with a :class:`FakeCloud`."""
DEVICE_TOKEN = "device-token-0123456789"  # noqa: S105 - a fake's well-known test token
"""The first device's token; the fake accepts it even before that device registers, so a
test can speak as a device (with :class:`~device_sdk.CloudClient`) without registering."""

_BUNDLE_PATH = re.compile(r"/v1/bundles/([0-9a-f]{64})")
_UPLOAD_PATH = re.compile(r"/v1/devices/me/uploads/([^/]+)")
_RANGE = re.compile(r"bytes=(\d+)-")


def public_key_b64(key: Ed25519PrivateKey) -> str:
    """The public half of ``key`` as devices receive it: base64 of the raw 32 bytes."""
    raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return base64.b64encode(raw).decode()


def sign_manifest(manifest: TaskManifest, key: Ed25519PrivateKey) -> str:
    """The cloud's signature of ``manifest``: base64 Ed25519 over its canonical JSON."""
    return base64.b64encode(key.sign(manifest.canonical_bytes())).decode()


def make_task(
    name: str = "hello",
    version: int = 1,
    *,
    files: dict[str, bytes] | None = None,
    key: Ed25519PrivateKey | None = None,
    deployment_id: int = 1,
) -> tuple[DesiredTask, bytes]:
    """A desired task signed by ``key`` (a fresh, untrusted key if None) and its bundle.

    ``files`` default to a ``main.py``, which becomes the entry. Hand the result to
    :meth:`FakeCloud.deploy` to offer a device exactly this task, e.g. one signed by a key
    it does not trust.
    """
    content = files if files is not None else {"main.py": f"VERSION = {version}\n".encode()}
    manifest = TaskManifest(
        name=name,
        version=version,
        entry="main.py" if "main.py" in content else None,
        files={
            n: FileDigest(sha256=hashlib.sha256(d).hexdigest(), size=len(d))
            for n, d in content.items()
        },
    )
    data = bundle.build(manifest, content)
    return _desired_task(manifest, data, key or Ed25519PrivateKey.generate(), deployment_id), data


def _desired_task(
    manifest: TaskManifest, data: bytes, key: Ed25519PrivateKey, deployment_id: int
) -> DesiredTask:
    return DesiredTask(
        name=manifest.name,
        version=manifest.version,
        deployment_id=deployment_id,
        bundle_sha256=hashlib.sha256(data).hexdigest(),
        bundle_size=len(data),
        manifest=manifest,
        signature=sign_manifest(manifest, key),
    )


@dataclass(frozen=True)
class RecordedRequest:
    """A request the fake received, as it arrived (header names in lower case)."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass(frozen=True)
class ReceivedUpload:
    """An upload item the fake stored: which device sent it, its idempotency key, payload."""

    device_id: str
    key: str
    payload: dict[str, Any]


@dataclass
class _Published:
    manifest: TaskManifest
    data: bytes
    signature: str


class FakeCloud:
    """An in-process fake of the cloud's device endpoints; see the module docstring.

    ``transport`` is what a :class:`~device_sdk.Device` (or ``CloudClient``) takes. The
    fake signs with ``key`` (a fresh Ed25519 key by default) and registers devices that
    present ``enrollment_key``. It is thread-safe: the device's sync, upload and app
    threads may all call it at once.

    The device endpoints: ``POST /v1/devices`` (register), ``GET /v1/devices/me``,
    ``GET /v1/devices/me/desired`` (``ETag`` / ``If-None-Match``), ``GET
    /v1/devices/me/stream`` (Server-Sent Events, open until the device closes it),
    ``POST /v1/devices/me/status``, ``GET /v1/bundles/{sha256}`` (``Range``, ``If-Range``)
    and ``POST /v1/devices/me/uploads/{channel}`` (each key stored once per device).
    """

    def __init__(
        self,
        *,
        key: Ed25519PrivateKey | None = None,
        enrollment_key: str = ENROLLMENT_KEY,
        rev: int = 1,
        down: bool = False,
        revoked: bool = False,
    ) -> None:
        self.key = key or Ed25519PrivateKey.generate()
        self.enrollment_key = enrollment_key
        self.rev = rev
        """The desired state's revision (its ETag); it grows with every change."""
        self.desired: dict[str, DesiredTask] = {}
        """What every device should run, by task name."""
        self.blobs: dict[str, bytes] = {}
        """Bundle bytes by sha256, as served; change one to play a corrupted download."""
        self.requests: list[RecordedRequest] = []
        self.reports: list[dict[str, Any]] = []
        """Every status report received, oldest first, as the report's JSON object."""
        self.down = down
        """While True every request fails as a refused connection."""
        self.revoked = revoked
        """While True every device token is refused (401), as for a removed device."""
        self.status_failures = 0
        """Answer this many status report requests 503 before accepting again."""
        self.cut_next_download_at: int | None = None
        """Break the next bundle download with a network error after this many bytes."""
        self.lost_upload_responses = 0
        """Store this many upload batches but lose the answer (a network error), so the
        device sends them again; the fake must then count each item once."""
        self._lock = threading.RLock()
        self._changed = threading.Condition(self._lock)
        self._published: dict[tuple[str, int], _Published] = {}
        self._history: dict[str, list[DesiredTask]] = {}
        self._deployments = itertools.count(1)
        self._devices: dict[str, tuple[str, DeviceAttributes]] = {}  # token -> (id, attrs)
        self._registered = 0
        self._uploads: dict[tuple[str, str], ReceivedUpload] = {}  # (device id, key) -> item
        self._upload_order: list[tuple[UploadChannel, tuple[str, str]]] = []
        self._streams: list[_EventStream] = []
        self._opened = 0
        self.coda = FakePools()
        """CoDA sample pools served at ``POST /v1/coda/retrieve``; fill with ``coda.add``."""
        self.routing = FakeRouting()
        """Routers, reported decisions and cloud models for ``predict(..., routing="auto")``;
        fill with ``routing.serve_router`` and ``routing.serve_model``."""

    # --- what a test reads ----------------------------------------------------------

    @property
    def transport(self) -> httpx.MockTransport:
        """An httpx transport that answers every request in process; pass it to Device."""
        return httpx.MockTransport(self.handle)

    @property
    def public_key(self) -> str:
        """The platform public key devices pin (base64 of the raw Ed25519 key)."""
        return public_key_b64(self.key)

    @property
    def device_ids(self) -> list[str]:
        """The ids of the devices registered so far, in order."""
        with self._lock:
            return [device_id for device_id, _ in self._devices.values()]

    def uploads(self, channel: str | UploadChannel) -> list[ReceivedUpload]:
        """The items stored on ``channel``, in arrival order; a retried item appears once."""
        wanted = UploadChannel(channel)
        with self._lock:
            return [self._uploads[key] for ch, key in self._upload_order if ch is wanted]

    def reported(self) -> list[tuple[str, int, str]]:
        """The status reports received as ``(task, version, state)``, oldest first."""
        with self._lock:
            return [(str(r["task"]), int(r["version"]), str(r["state"])) for r in self.reports]

    def paths(self, method: str | None = None) -> list[str]:
        """The paths requested so far (of ``method`` only, if given), in order."""
        with self._lock:
            return [r.path for r in self.requests if method is None or r.method == method]

    def stream_opened(self, count: int, timeout_s: float = 10.0) -> bool:
        """Wait until ``count`` event streams were opened in all; False on time-out."""
        with self._changed:
            return self._changed.wait_for(lambda: self._opened >= count, timeout_s)

    # --- what a test does to the cloud ----------------------------------------------

    def publish(self, task: str | os.PathLike[str] | bytes) -> int:
        """Publish a task directory or packed bundle bytes and return its version.

        As the cloud does: the bundle is checked (``InvalidBundle`` if it is not a valid
        one, or its pipeline spec is not, every bad path named) and its manifest signed
        with the platform key. Versions are immutable: a
        version published before raises ``ValueError``, unless it is the same bundle.
        """
        if isinstance(task, bytes):
            data = task
            manifest = bundle.read(data).manifest
            bundle.check_pipeline(manifest)  # the cloud refuses an invalid pipeline too
        else:
            manifest, data = bundle.pack(Path(task))
        with self._lock:
            published = self._published.get((manifest.name, manifest.version))
            if published is not None and published.data != data:
                raise ValueError(
                    f"Task {manifest.name!r} version {manifest.version} is published and "
                    "versions are immutable; raise `version` in manifest.json."
                )
            self._published[(manifest.name, manifest.version)] = _Published(
                manifest, data, sign_manifest(manifest, self.key)
            )
        return manifest.version

    @overload
    def deploy(self, task: str, version: int) -> DesiredTask: ...
    @overload
    def deploy(self, task: DesiredTask, version: bytes) -> DesiredTask: ...

    def deploy(self, task: str | DesiredTask, version: int | bytes) -> DesiredTask:
        """Release a published ``version`` of ``task`` to every registered device (and
        every device that registers later); nudges their event streams.

        The low-level form ``deploy(desired_task, bundle_bytes)`` offers devices exactly
        that desired task and serves those bytes, signed or not: use it with
        :func:`make_task` to see how a device handles a hostile or broken offer.
        """
        if isinstance(task, DesiredTask):
            if not isinstance(version, bytes):
                raise TypeError("deploy(desired_task, ...) takes the bundle bytes second.")
            return self._offer(task, version)
        if not isinstance(version, int):
            raise TypeError("deploy(task_name, ...) takes the version number second.")
        with self._lock:
            published = self._published.get((task, version))
            if published is None:
                have = sorted(v for n, v in self._published if n == task)
                raise ValueError(
                    f"Task {task!r} has no published version {version}; published versions "
                    f"are {', '.join(map(str, have)) or 'none'}. Call publish() first."
                )
            offer = DesiredTask(
                name=task,
                version=version,
                deployment_id=next(self._deployments),
                bundle_sha256=hashlib.sha256(published.data).hexdigest(),
                bundle_size=len(published.data),
                manifest=published.manifest,
                signature=published.signature,
            )
            return self._offer(offer, published.data)

    def release(
        self, name: str = "hello", version: int = 1, files: dict[str, bytes] | None = None
    ) -> DesiredTask:
        """Publish a task made of ``files`` (see :func:`make_task`) and deploy it."""
        _, data = make_task(name, version, key=self.key, files=files)
        self.publish(data)
        return self.deploy(name, version)

    def rollback(self, task: str) -> int | None:
        """Roll back the latest deployment of ``task``: devices return to the version
        deployed before it (re-activating the copy they kept), or drop the task if there
        was none. Returns the version now deployed, or None."""
        with self._lock:
            history = self._history.get(task)
            if not history:
                raise ValueError(f"Task {task!r} has no deployment to roll back.")
            history.pop()
            if history:
                self.desired[task] = history[-1]
            else:
                del self.desired[task]
            self.rev += 1
            current = self.desired.get(task)
        self.nudge()
        return None if current is None else current.version

    def withdraw(self, name: str) -> None:
        """Take task ``name`` out of the desired state (every deployment of it ends)."""
        with self._lock:
            del self.desired[name]
            self._history.pop(name, None)
            self.rev += 1
        self.nudge()

    def nudge(self) -> None:
        """Send the current revision on every open event stream, as the cloud does."""
        with self._lock:
            frame = _nudge_frame(self.rev)
            for stream in self._streams:
                stream.push(frame)

    def drop_streams(self) -> None:
        """End every open event stream, as a cloud restart does."""
        with self._lock:
            streams, self._streams = self._streams, []
        for stream in streams:
            stream.end()

    def _offer(self, task: DesiredTask, data: bytes) -> DesiredTask:
        with self._lock:
            self.blobs[task.bundle_sha256] = data
            self.desired[task.name] = task
            self._history.setdefault(task.name, []).append(task)
            self.rev += 1
        self.nudge()
        return task

    # --- the endpoints --------------------------------------------------------------

    def handle(self, request: httpx.Request) -> httpx.Response:
        """Answer one request (the handler behind :attr:`transport`)."""
        body = request.read()
        with self._lock:
            self.requests.append(
                RecordedRequest(request.method, request.url.path, dict(request.headers), body)
            )
        if self.down:
            raise httpx.ConnectError("connection refused", request=request)
        method, path = request.method, request.url.path
        if (method, path) == ("POST", "/v1/devices"):
            return self._register(body)
        device_id = self._authenticate(request)
        if device_id is None:
            return _error(401, "unauthorized", "Unknown or revoked device token.")
        if (method, path) == ("GET", "/v1/devices/me"):
            return self._me(request)
        if (method, path) == ("GET", "/v1/devices/me/desired"):
            return self._desired_state(request)
        if (method, path) == ("POST", "/v1/devices/me/status"):
            return self._status(body)
        if (method, path) == ("GET", "/v1/devices/me/stream"):
            return self._stream(request)
        if method == "GET" and (match := _BUNDLE_PATH.fullmatch(path)):
            return self._bundle(match.group(1), request)
        if method == "POST" and (match := _UPLOAD_PATH.fullmatch(path)):
            return self._upload(device_id, match.group(1), body)
        if (method, path) == ("POST", "/v1/coda/retrieve"):
            return self.coda.handle(body)
        if (routed := self.routing.handle(method, path, body)) is not None:
            return routed
        return _error(404, "not_found", f"No route {method} {path} on this fake cloud.")

    def _authenticate(self, request: httpx.Request) -> str | None:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme != "Bearer" or self.revoked:
            return None
        with self._lock:
            if token in self._devices:
                return self._devices[token][0]
        return DEVICE_ID if token == DEVICE_TOKEN else None

    def _register(self, body: bytes) -> httpx.Response:
        try:
            registration = RegisterDeviceRequest.model_validate_json(body)
        except ValidationError as exc:
            return _invalid(exc)
        if registration.enrollment_key != self.enrollment_key:
            return _error(401, "invalid_enrollment_key", "That enrollment key was never issued.")
        with self._lock:
            self._registered += 1
            number = self._registered
            token = DEVICE_TOKEN if number == 1 else f"device-token-{number:010d}"
            device_id = DEVICE_ID if number == 1 else f"dev-{number}"
            self._devices[token] = (device_id, registration.attributes)
        now = datetime.now(UTC)
        registered = RegisterDeviceResponse(
            device_id=device_id,
            attributes=registration.attributes,
            created_at=now,
            last_seen=now,
            token=token,
            platform_public_key=self.public_key,
        )
        return _json(201, registered)

    def _me(self, request: httpx.Request) -> httpx.Response:
        token = request.headers["authorization"].partition(" ")[2]
        with self._lock:
            device_id, attributes = self._devices.get(token, (DEVICE_ID, DeviceAttributes()))
        now = datetime.now(UTC).isoformat()
        return httpx.Response(
            200,
            json={
                "device_id": device_id,
                "attributes": attributes.model_dump(mode="json"),
                "created_at": now,
                "last_seen": now,
            },
        )

    def _desired_state(self, request: httpx.Request) -> httpx.Response:
        with self._lock:
            etag = f'"{self.rev}"'
            headers = {"ETag": etag, "Cache-Control": "no-cache"}
            if etag in request.headers.get("if-none-match", ""):
                return httpx.Response(304, headers=headers)
            state = DesiredState(rev=self.rev, tasks=list(self.desired.values()))
        return _json(200, state, headers)

    def _status(self, body: bytes) -> httpx.Response:
        try:
            reports = StatusReports.model_validate_json(body).reports
        except ValidationError as exc:
            return _invalid(exc)
        with self._lock:
            if self.status_failures > 0:
                self.status_failures -= 1
                return _error(503, "service_unavailable", "Try again later.")
            self.reports.extend(r.model_dump(mode="json") for r in reports)
        return httpx.Response(200, json={"accepted": len(reports)})

    def _stream(self, request: httpx.Request) -> httpx.Response:
        with self._changed:
            stream = _EventStream(self._forget_stream)
            stream.push(b"retry: 1000\n\n")
            if request.headers.get("last-event-id") != str(self.rev):
                stream.push(_nudge_frame(self.rev))
            self._streams.append(stream)
            self._opened += 1
            self._changed.notify_all()
        return httpx.Response(200, headers={"Content-Type": "text/event-stream"}, stream=stream)

    def _forget_stream(self, stream: _EventStream) -> None:
        with self._lock:
            if stream in self._streams:
                self._streams.remove(stream)

    def _bundle(self, sha256: str, request: httpx.Request) -> httpx.Response:
        with self._lock:
            data = self.blobs.get(sha256)
            cut, self.cut_next_download_at = self.cut_next_download_at, None
        if data is None:
            return _error(404, "bundle_not_found", f"No bundle with sha256 {sha256}.")
        etag = f'"{sha256}"'
        headers = {"ETag": etag, "Accept-Ranges": "bytes"}
        start, status = 0, 200
        match = _RANGE.fullmatch(request.headers.get("range", ""))
        if_range = request.headers.get("if-range")
        if match and (if_range is None or if_range == etag):
            start = int(match.group(1))
            if start >= len(data):
                return _error(416, "range_not_satisfiable", f"The bundle has {len(data)} bytes.")
            status = 206
            headers["Content-Range"] = f"bytes {start}-{len(data) - 1}/{len(data)}"
        return httpx.Response(status, headers=headers, stream=_Body(data[start:], cut))

    def _upload(self, device_id: str, channel: str, body: bytes) -> httpx.Response:
        if channel not in set(UploadChannel):
            known = ", ".join(c.value for c in UploadChannel)
            return _error(
                422,
                "validation_error",
                f"The request is invalid: channel: Input should be one of {known}.",
                [{"field": "path.channel", "problem": f"not one of {known}", "type": "enum"}],
            )
        if len(body) > MAX_UPLOAD_BODY_BYTES:
            return _error(
                413,
                "payload_too_large",
                f"An upload body may have at most {MAX_UPLOAD_BODY_BYTES} bytes; this one has "
                f"{len(body)}. Send fewer items per request.",
            )
        try:
            batch = UploadBatch.model_validate_json(body)
        except ValidationError as exc:
            return _invalid(exc)
        accepted = 0
        with self._lock:
            for item in batch.items:
                key = (device_id, item.key)
                if key in self._uploads:
                    continue
                self._uploads[key] = ReceivedUpload(device_id, item.key, item.payload)
                self._upload_order.append((UploadChannel(channel), key))
                accepted += 1
            lose = self.lost_upload_responses > 0
            if lose:
                self.lost_upload_responses -= 1
        if lose:
            raise httpx.ReadError("connection reset by peer (the fake lost this answer)")
        answer = UploadAccepted(accepted=accepted, duplicates=len(batch.items) - accepted)
        return _json(200, answer)


class _EventStream(httpx.SyncByteStream):
    """A response body that stays open, yielding what the fake pushes, until closed."""

    def __init__(self, forget: Callable[[_EventStream], None]) -> None:
        self._chunks: queue.Queue[bytes | None] = queue.Queue()
        self._forget = forget

    def push(self, chunk: bytes) -> None:
        self._chunks.put(chunk)

    def end(self) -> None:
        self._chunks.put(None)

    def __iter__(self) -> Iterator[bytes]:
        while (chunk := self._chunks.get()) is not None:
            yield chunk

    def close(self) -> None:
        # The device closes its stream from another thread: wake the reader.
        self._chunks.put(None)
        self._forget(self)


class _Body(httpx.SyncByteStream):
    """Bundle bytes, optionally cut off after ``cut`` bytes by a network error."""

    def __init__(self, data: bytes, cut: int | None) -> None:
        self._data = data
        self._cut = cut

    def __iter__(self) -> Iterator[bytes]:
        if self._cut is None:
            yield self._data
            return
        yield self._data[: self._cut]
        raise httpx.ReadError("connection reset by peer")


def _nudge_frame(rev: int) -> bytes:
    return f'event: desired\nid: {rev}\ndata: {{"desired_rev": {rev}}}\n\n'.encode()


def _json(status: int, body: BaseModel, headers: dict[str, str] | None = None) -> httpx.Response:
    return httpx.Response(
        status,
        content=body.model_dump_json().encode(),
        headers={"Content-Type": "application/json", **(headers or {})},
    )


def _invalid(exc: ValidationError) -> httpx.Response:
    details = [
        {
            "field": ".".join(str(p) for p in e["loc"]) or "body",
            "problem": e["msg"],
            "type": e["type"],
        }
        for e in exc.errors()
    ]
    summary = "; ".join(f"{d['field']}: {d['problem']}" for d in details[:5])
    return _error(
        422,
        "validation_error",
        f"The request is invalid: {summary}. Fix these fields and retry.",
        details,
    )


def _error(status: int, code: str, message: str, details: object = None) -> httpx.Response:
    error: dict[str, object] = {"code": code, "message": message}
    if details is not None:
        error["details"] = details
    return httpx.Response(status, json={"error": error})
