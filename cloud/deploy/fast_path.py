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
import logging
from collections.abc import Callable
from typing import Any

from prometheus_client import Counter
from pydantic import ValidationError
from sqlalchemy import bindparam, select
from sqlalchemy.engine import Dialect
from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Receive, Scope, Send

from cloud.blobs.routes import IMMUTABLE
from cloud.core.context import CloudContext
from cloud.core.errors import TandemError
from cloud.core.handlers import tandem_error_response
from cloud.core.raw_asgi import RouteTemplate, cached_device, read_body, replay, respond
from cloud.deploy import desired
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
BUNDLES = "/v1/bundles/"
MAX_STATUS_BODY = 64 * 1024  # a larger report batch takes the full path
MAX_INLINE_BUNDLE = 1 << 20  # a larger bundle is streamed by the full path
_HEX = frozenset("0123456789abcdef")


_ROUTES = {
    DESIRED: RouteTemplate(DESIRED),
    STATUS: RouteTemplate(STATUS),
    BUNDLES: RouteTemplate("/v1/bundles/{sha256}"),
}


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
            rows = self._desired_rows(device.seq)
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
        try:
            path = self.context.blobs.path_for(sha256)
            if path.stat().st_size > MAX_INLINE_BUNDLE:
                return False
            data = path.read_bytes()
        except OSError:
            return False
        out = [
            (b"etag", f'"{sha256}"'.encode()),
            (b"cache-control", IMMUTABLE.encode()),
            (b"accept-ranges", b"bytes"),
        ]
        await respond(send, 200, data, BUNDLE_MEDIA_TYPE.encode(), out)
        return True
