"""An in-process fake of the cloud's device endpoints, served through ``httpx.MockTransport``.

It signs bundles with its own Ed25519 key, keeps one desired state for every device,
serves bundles with Range, keeps an open event stream per connection, and records every
request. Knobs make it fail the ways a real cloud does: down, 5xx on status reports, a
transfer cut short, a tampered blob, a revoked token.
"""

from __future__ import annotations

import base64
import hashlib
import json
import queue
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field

import httpx
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from device_sdk import bundle
from device_sdk.wire import DesiredTask, FileDigest, TaskManifest

ENROLLMENT_KEY = "enroll-0123456789"
DEVICE_TOKEN = "device-token-0123456789"


def make_task(
    name: str = "hello",
    version: int = 1,
    *,
    files: dict[str, bytes] | None = None,
    key: Ed25519PrivateKey | None = None,
    deployment_id: int = 1,
) -> tuple[DesiredTask, bytes]:
    """A desired task signed by ``key`` (a fresh key if None) and its bundle bytes."""
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
    signer = key or Ed25519PrivateKey.generate()
    signature = base64.b64encode(signer.sign(manifest.canonical_bytes())).decode()
    task = DesiredTask(
        name=name,
        version=version,
        deployment_id=deployment_id,
        bundle_sha256=hashlib.sha256(data).hexdigest(),
        bundle_size=len(data),
        manifest=manifest,
        signature=signature,
    )
    return task, data


def public_key_b64(key: Ed25519PrivateKey) -> str:
    raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return base64.b64encode(raw).decode()


class _EventStream(httpx.SyncByteStream):
    """A response body that stays open, yielding what the fake pushes, until closed."""

    def __init__(self, first: list[bytes]) -> None:
        self.chunks: queue.Queue[bytes | None] = queue.Queue()
        for chunk in first:
            self.chunks.put(chunk)
        self.closed = threading.Event()

    def __iter__(self) -> Iterator[bytes]:
        while not self.closed.is_set():
            try:
                chunk = self.chunks.get(timeout=0.01)
            except queue.Empty:
                continue
            if chunk is None:
                return
            yield chunk

    def close(self) -> None:
        self.closed.set()


@dataclass
class Recorded:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class FakeCloud:
    """The fake; ``transport`` is what a Device or CloudClient takes."""

    key: Ed25519PrivateKey = field(default_factory=Ed25519PrivateKey.generate)
    rev: int = 1
    desired: dict[str, DesiredTask] = field(default_factory=dict)
    blobs: dict[str, bytes] = field(default_factory=dict)
    requests: list[Recorded] = field(default_factory=list)
    reports: list[dict[str, object]] = field(default_factory=list)
    down: bool = False
    revoked: bool = False
    status_failures: int = 0
    cut_next_download_at: int | None = None
    streams: list[_EventStream] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    changed: threading.Condition = field(default_factory=threading.Condition)
    opened: int = 0

    @property
    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self.handle)

    @property
    def public_key(self) -> str:
        return public_key_b64(self.key)

    # --- what a test does to the cloud --------------------------------------------

    def release(
        self, name: str = "hello", version: int = 1, files: dict[str, bytes] | None = None
    ) -> DesiredTask:
        """Publish and deploy a task version signed by the platform key; nudge streams."""
        task, data = make_task(name, version, key=self.key, files=files)
        self.deploy(task, data)
        return task

    def deploy(self, task: DesiredTask, data: bytes) -> None:
        with self.lock:
            self.blobs[task.bundle_sha256] = data
            self.desired[task.name] = task
            self.rev += 1
        self.nudge()

    def withdraw(self, name: str) -> None:
        with self.lock:
            del self.desired[name]
            self.rev += 1
        self.nudge()

    def nudge(self) -> None:
        frame = f'event: desired\nid: {self.rev}\ndata: {{"desired_rev": {self.rev}}}\n\n'
        for stream in list(self.streams):
            stream.chunks.put(frame.encode())

    def drop_streams(self) -> None:
        """End every open event stream, as a cloud restart does."""
        for stream in list(self.streams):
            stream.chunks.put(None)
        self.streams.clear()

    def stream_opened(self, count: int, timeout_s: float = 10.0) -> bool:
        """Wait until ``count`` event streams were opened in all."""
        with self.changed:
            return self.changed.wait_for(lambda: self.opened >= count, timeout_s)

    def paths(self, method: str | None = None) -> list[str]:
        return [r.path for r in self.requests if method is None or r.method == method]

    def reported(self) -> list[tuple[str, int, str]]:
        return [(str(r["task"]), int(str(r["version"])), str(r["state"])) for r in self.reports]

    # --- the endpoints -------------------------------------------------------------

    def handle(self, request: httpx.Request) -> httpx.Response:
        body = request.read()
        with self.lock:
            self.requests.append(
                Recorded(request.method, request.url.path, dict(request.headers), body)
            )
        if self.down:
            raise httpx.ConnectError("connection refused", request=request)
        path = request.url.path
        if request.method == "POST" and path == "/v1/devices":
            return self._register(json.loads(body))
        if request.headers.get("authorization") != f"Bearer {DEVICE_TOKEN}" or self.revoked:
            return _error(401, "unauthorized", "Unknown or revoked token.")
        if path == "/v1/devices/me/desired":
            return self._desired(request)
        if path == "/v1/devices/me/status":
            return self._status(json.loads(body))
        if path == "/v1/devices/me/stream":
            return self._stream(request)
        if match := re.fullmatch(r"/v1/bundles/([0-9a-f]{64})", path):
            return self._bundle(match.group(1), request)
        return _error(404, "not_found", f"No route {path}.")

    def _register(self, body: dict[str, object]) -> httpx.Response:
        if body.get("enrollment_key") != ENROLLMENT_KEY:
            return _error(401, "invalid_enrollment_key", "That enrollment key was never issued.")
        return httpx.Response(
            201,
            json={
                "device_id": "dev-1",
                "attributes": body.get("attributes") or {},
                "created_at": "2026-01-01T00:00:00Z",
                "last_seen": "2026-01-01T00:00:00Z",
                "token": DEVICE_TOKEN,
                "platform_public_key": self.public_key,
            },
        )

    def _desired(self, request: httpx.Request) -> httpx.Response:
        with self.lock:
            etag = f'"{self.rev}"'
            if request.headers.get("if-none-match") == etag:
                return httpx.Response(304, headers={"ETag": etag})
            state = {
                "rev": self.rev,
                "tasks": [t.model_dump(mode="json") for t in self.desired.values()],
            }
        return httpx.Response(200, json=state, headers={"ETag": etag})

    def _status(self, body: dict[str, list[dict[str, object]]]) -> httpx.Response:
        if self.status_failures > 0:
            self.status_failures -= 1
            return _error(503, "service_unavailable", "Try again later.")
        self.reports.extend(body["reports"])
        return httpx.Response(200, json={"accepted": len(body["reports"])})

    def _stream(self, request: httpx.Request) -> httpx.Response:
        first = [b"retry: 1000\n\n"]
        if request.headers.get("last-event-id") != str(self.rev):
            first.append(
                f'event: desired\nid: {self.rev}\ndata: {{"desired_rev": {self.rev}}}\n\n'.encode()
            )
        stream = _EventStream(first)
        self.streams.append(stream)
        with self.changed:
            self.opened += 1
            self.changed.notify_all()
        return httpx.Response(200, headers={"Content-Type": "text/event-stream"}, stream=stream)

    def _bundle(self, sha256: str, request: httpx.Request) -> httpx.Response:
        data = self.blobs.get(sha256)
        if data is None:
            return _error(404, "bundle_not_found", "No such bundle.")
        start = 0
        status = 200
        headers = {"ETag": f'"{sha256}"', "Accept-Ranges": "bytes"}
        if match := re.fullmatch(r"bytes=(\d+)-", request.headers.get("range", "")):
            start = int(match.group(1))
            status = 206
            headers["Content-Range"] = f"bytes {start}-{len(data) - 1}/{len(data)}"
        cut, self.cut_next_download_at = self.cut_next_download_at, None
        return httpx.Response(status, headers=headers, stream=_Body(data[start:], cut))


class _Body(httpx.SyncByteStream):
    """Bundle bytes, optionally cut off after ``cut`` bytes by a network error."""

    def __init__(self, data: bytes, cut: int | None) -> None:
        self.data = data
        self.cut = cut

    def __iter__(self) -> Iterator[bytes]:
        if self.cut is None:
            yield self.data
            return
        yield self.data[: self.cut]
        raise httpx.ReadError("connection reset by peer")


def _error(status: int, code: str, message: str) -> httpx.Response:
    return httpx.Response(status, json={"error": {"code": code, "message": message}})
