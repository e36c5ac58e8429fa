"""The three requests every device makes for a release, answered below the framework.

A release makes each targeted device ask for its desired state, download a bundle and
report its status, all within a second or two. Through FastAPI each request costs about
2-3 ms of one core (routing, dependency resolution, validation, an ORM session, a thread
hop), and at thousands of devices that queue is the release's latency. This ASGI
middleware answers the common case of those three requests directly: a cached device
token, one indexed SQL statement or one small file, the status reports handed to the same
group-commit writer. Anything else (a token not in the cache, a Range request, a body that
does not validate, a device removed meanwhile, a large bundle)
goes on to the full application, which answers exactly as before; the responses are the
same either way, and a test holds them equal.

``tandem_fast_path_requests_total`` counts what was answered here, by route.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from prometheus_client import Counter
from pydantic import ValidationError
from sqlalchemy import bindparam, event, select
from sqlalchemy.engine import Dialect
from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Receive, Scope, Send

from cloud.auth.principal import DevicePrincipal
from cloud.blobs.routes import IMMUTABLE
from cloud.core.context import CloudContext
from cloud.core.errors import TandemError
from cloud.core.handlers import tandem_error_response
from cloud.core.raw_asgi import (
    RouteTemplate,
    cached_device,
    cached_token_hash,
    read_body,
    replay,
    respond,
)
from cloud.deploy import desired
from cloud.deploy.fast_stream import serve_stream
from cloud.deploy.rollout import apply_gates
from cloud.deploy.status_writer import StatusWriter
from cloud.deploy.tables import DeviceTaskRow
from cloud.devices.tables import DeviceRow
from cloud.tasks.service import BUNDLE_MEDIA_TYPE
from cloud.tasks.tables import TaskVersionRow
from device_sdk.wire import StatusReports

log = logging.getLogger("tandem.deploy.fast_path")

DESIRED = "/v1/devices/me/desired"
STATUS = "/v1/devices/me/status"
STREAM = "/v1/devices/me/stream"
BUNDLES = "/v1/bundles/"
MAX_STATUS_BODY = 64 * 1024  # a larger report batch takes the full path
MAX_INLINE_BUNDLE = 1 << 20  # a larger bundle is streamed by the full path
MAX_CACHED_BUNDLE_BYTES = 32 << 20  # small bundles kept in memory, least recently used out
_HEX = frozenset("0123456789abcdef")


_ROUTES = {
    DESIRED: RouteTemplate(DESIRED),
    STATUS: RouteTemplate(STATUS),
    STREAM: RouteTemplate(STREAM),
    BUNDLES: RouteTemplate("/v1/bundles/{sha256}"),
}


class BundleCache:
    """Bundle bytes by digest, least recently used evicted past ``max_bytes`` in all."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.size = 0
        self._items: OrderedDict[str, bytes] = OrderedDict()

    def get(self, sha256: str) -> bytes | None:
        data = self._items.get(sha256)
        if data is not None:
            self._items.move_to_end(sha256)
        return data

    def put(self, sha256: str, data: bytes) -> None:
        if len(data) > self.max_bytes or sha256 in self._items:
            return
        self._items[sha256] = data
        self.size += len(data)
        while self.size > self.max_bytes:
            _, evicted = self._items.popitem(last=False)
            self.size -= len(evicted)


def _desired_statement(dialect: Dialect) -> tuple[str, bool]:
    """The desired-state query as the driver's own SQL, and whether it binds by position."""
    # One statement, so the revision and the rows come from one snapshot.
    statement = (
        select(
            DeviceRow.desired_rev,
            DeviceTaskRow.deployment_id,
            TaskVersionRow.bundle_sha256,
            TaskVersionRow.signature,
            TaskVersionRow.id,
        )
        .select_from(DeviceRow)
        .outerjoin(DeviceTaskRow, DeviceTaskRow.device_seq == DeviceRow.seq)
        .outerjoin(TaskVersionRow, TaskVersionRow.id == DeviceTaskRow.task_version_id)
        .where(DeviceRow.seq == bindparam("seq"))
        .order_by(DeviceTaskRow.task_name)
    )
    compiled = statement.compile(dialect=dialect)
    return str(compiled), bool(compiled.positional)


class DeviceFastPath:
    def __init__(
        self, app: ASGIApp, *, context: CloudContext, status_writer: Callable[[], StatusWriter]
    ) -> None:
        self.app = app
        self.context = context
        self.status_writer = status_writer
        self.inline_db = context.db.engine.dialect.name == "sqlite"
        self.sql, self.positional = _desired_statement(context.db.engine.dialect)
        self._rendering = asyncio.Lock()
        # SQLite only: one connection of the event loop's own, outside the pool. Checking a
        # connection out of the pool and back in cost more than the indexed read itself.
        self._reader: Any = None
        event.listen(context.db.engine, "engine_disposed", lambda _engine: self.close())
        self._bundles = BundleCache(MAX_CACHED_BUNDLE_BYTES)
        self.answered = Counter(
            "tandem_fast_path_requests_total",
            "Device requests answered by the fast path (the rest go through the full app).",
            ["route"],
            registry=context.metrics.registry,
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            method, path = scope["method"], scope["path"]
            if method == "GET" and path == DESIRED:
                if await self._desired(scope, send):
                    return self._count(scope, DESIRED)
            elif method == "GET" and path == STREAM:
                if await self._stream(scope, receive, send):
                    return self._count(scope, STREAM)
            elif method == "POST" and path == STATUS:
                handled, receive = await self._status(scope, receive, send)
                if handled:
                    return self._count(scope, STATUS)
            elif (
                method == "GET"
                and path.startswith(BUNDLES)
                and await self._bundle(scope, path[len(BUNDLES) :], send)
            ):
                return self._count(scope, BUNDLES)
        await self.app(scope, receive, send)

    def _count(self, scope: Scope, route: str) -> None:
        scope["route"] = _ROUTES[route]
        self.answered.labels(_ROUTES[route].path).inc()

    def _inline_rows(self, seq: int) -> list[tuple[Any, ...]]:
        """The desired-state rows through the loop's own SQLite connection (autocommit:
        each read sees the latest commit)."""
        if self._reader is None:
            reader = self.context.db.engine.raw_connection()
            reader.detach()  # closed by us, never returned to the pool
            self._reader = reader
        try:
            cursor = self._reader.cursor()
            cursor.execute(self.sql, (seq,) if self.positional else {"seq": seq})
            rows = list(cursor.fetchall())
            cursor.close()
            return rows
        except Exception:
            self.close()  # a broken connection is replaced on the next request
            raise

    def close(self) -> None:
        """Close the loop's own SQLite connection, if one was opened."""
        reader, self._reader = self._reader, None
        if reader is not None:
            reader.close()

    def _desired_rows(self, seq: int) -> list[tuple[Any, ...]]:
        connection = self.context.db.engine.raw_connection()
        try:
            cursor = connection.cursor()
            cursor.execute(self.sql, (seq,) if self.positional else {"seq": seq})
            rows = list(cursor.fetchall())
            cursor.close()
            return rows
        finally:
            connection.close()

    async def _desired(self, scope: Scope, send: Send) -> bool:
        headers = dict(scope["headers"])
        device = cached_device(self.context, headers)
        if device is None:
            return False
        if self.inline_db:
            # An indexed read of a local file, without a transaction: shorter than the hop
            # to a worker thread and back.
            rows = self._inline_rows(device.seq)
        else:
            rows = await run_in_threadpool(self._desired_rows, device.seq)
        if not rows:
            return False  # the device was removed: the full path answers 404
        tag = desired.etag(rows[0][0])
        out = [(b"etag", tag.encode()), (b"cache-control", b"no-cache")]
        if tag in headers.get(b"if-none-match", b"").decode("latin-1"):
            await send({"type": "http.response.start", "status": 304, "headers": out})
            await send({"type": "http.response.body", "body": b""})
            return True
        tasks = []
        for _rev, deployment_id, sha256, signature, version_id in rows:
            if deployment_id is None:
                continue  # the LEFT JOIN's row for a device with no tasks
            rendered = desired.rendered(sha256, signature, deployment_id)
            if rendered is None:
                rendered = await self._render(deployment_id, version_id, sha256, signature)
            tasks.append(rendered)
            # Its desired state names the bundle, so the device may fetch it: the same
            # rule the full path checks, known here without a query.
            self.context.remember_readable(device.seq, sha256)
        body = f'{{"rev":{rows[0][0]},"tasks":[{",".join(tasks)}]}}'.encode()
        await respond(send, 200, body, b"application/json", out)
        return True

    async def _stream(self, scope: Scope, receive: Receive, send: Send) -> bool:
        headers = dict(scope["headers"])
        token_hash = cached_token_hash(headers)
        device = self.context.auth_cache.get(token_hash) if token_hash else None
        if token_hash is None or not isinstance(device, DevicePrincipal):
            return False
        return await serve_stream(
            self.context, device, token_hash, headers, self._current_rev, receive, send
        )

    async def _current_rev(self, seq: int) -> int | None:
        if self.inline_db:
            rows = self._inline_rows(seq)
        else:
            rows = await run_in_threadpool(self._desired_rows, seq)
        return int(rows[0][0]) if rows else None

    async def _render(
        self, deployment_id: int, version_id: int, sha256: str, signature: str
    ) -> str:
        """Render a task version new to this replica: the first device of a release to
        ask does it, the devices asking at the same moment wait for that one."""
        async with self._rendering:
            rendered = desired.rendered(sha256, signature, deployment_id)
            if rendered is not None:
                return rendered
            return await run_in_threadpool(self._render_version, deployment_id, version_id)

    def _render_version(self, deployment_id: int, version_id: int) -> str:
        with self.context.db.session(write=False) as session:
            version = session.get(TaskVersionRow, version_id)
            assert version is not None  # versions are immutable and never deleted
            return desired.render(deployment_id, version)

    async def _status(self, scope: Scope, receive: Receive, send: Send) -> tuple[bool, Receive]:
        headers = dict(scope["headers"])
        device = cached_device(self.context, headers)
        if device is None or not headers.get(b"content-type", b"").startswith(b"application/json"):
            return False, receive
        declared = headers.get(b"content-length", b"")
        if not declared.isdigit() or int(declared) > MAX_STATUS_BODY:
            return False, receive
        data, messages = await read_body(receive, int(declared))
        if data is None:
            return False, replay(messages, receive)
        try:
            body = StatusReports.model_validate_json(data)
        except ValidationError:
            return False, replay(messages, receive)  # the full path words the 422
        try:
            gated = await self.status_writer().submit(device, list(body.reports))
            if gated:
                await apply_gates(self.context, sorted(gated))
        except TandemError as exc:  # refused reports: the same answer the full path gives
            await tandem_error_response(exc)(scope, receive, send)
            return True, receive
        await respond(send, 200, b'{"accepted":%d}' % len(body.reports), b"application/json", [])
        return True, receive

    async def _bundle(self, scope: Scope, sha256: str, send: Send) -> bool:
        if len(sha256) != 64 or not _HEX.issuperset(sha256):
            return False
        headers = dict(scope["headers"])
        if b"range" in headers or b"if-none-match" in headers or b"if-range" in headers:
            return False
        device = cached_device(self.context, headers)
        if device is None or (device.seq, sha256) not in self.context.readable_bundles:
            return False  # the full path checks the device may read it, then remembers
        data = self._bundles.get(sha256)
        if data is None:
            try:
                path = self.context.blobs.path_for(sha256)
                if path.stat().st_size > MAX_INLINE_BUNDLE:
                    return False
                data = path.read_bytes()
            except OSError:
                return False
            # Content-addressed and immutable: what was read once is the bundle for good.
            if hashlib.sha256(data).hexdigest() != sha256:
                return False  # a damaged blob: the full path says so
            self._bundles.put(sha256, data)
        out = [
            (b"etag", f'"{sha256}"'.encode()),
            (b"cache-control", IMMUTABLE.encode()),
            (b"accept-ranges", b"bytes"),
        ]
        await respond(send, 200, data, BUNDLE_MEDIA_TYPE.encode(), out)
        return True
