"""Inference requests from devices, answered below the framework.

Through FastAPI an inference request spends about a millisecond of one core in routing,
dependency resolution and middleware before any model work, several times what decoding,
checking and batching one row costs. This ASGI middleware answers the common case
directly: ``POST /v1/models/{name}/infer`` (and the ``/v1/models/-/noop`` no-op) with a
cached device token, a JSON or .npz body of declared length within the limit, an Accept
the endpoint can honour and no query but ``version=N``. It runs the very same exchange
(``cloud.serving.exchange``) and renders errors with the same handler, so the answers are
identical; anything else (an admin key, a token not cached yet, a chunked body, a
malformed header or query) goes on to the full application.

``tandem_serving_fast_path_requests_total`` counts what was answered here.
"""

from __future__ import annotations

import logging
import re

from prometheus_client import Counter
from starlette.types import ASGIApp, Receive, Scope, Send

from cloud.core.context import CloudContext
from cloud.core.db import INT32_MAX
from cloud.core.errors import TandemError
from cloud.core.handlers import error_response, tandem_error_response
from cloud.core.raw_asgi import RouteTemplate, cached_device, read_body, replay, respond
from cloud.serving import codec
from cloud.serving.exchange import answer
from cloud.serving.service import ServingPool

log = logging.getLogger("tandem.errors")

_INFER = re.compile(r"/v1/models/([a-z0-9][a-z0-9._-]{0,63})/infer")
_VERSION = re.compile(rb"version=([1-9][0-9]{0,9})")
NOOP = "/v1/models/-/noop"


_INFER_ROUTE = RouteTemplate("/v1/models/{name}/infer")
_NOOP_ROUTE = RouteTemplate(NOOP)


class ServingFastPath:
    def __init__(self, app: ASGIApp, *, context: CloudContext, pool: ServingPool) -> None:
        self.app = app
        self.context = context
        self.pool = pool
        self.max_body = context.settings.serving_max_body_bytes
        answered = Counter(
            "tandem_serving_fast_path_requests_total",
            "Inference requests answered below the framework (the rest take the full app).",
            ["route"],
            registry=context.metrics.registry,
        )
        self.answered = {
            route: answered.labels(route.path) for route in (_INFER_ROUTE, _NOOP_ROUTE)
        }

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
            path = scope["path"]
            match = _INFER.fullmatch(path)
            if match is not None or path == NOOP:
                route = _INFER_ROUTE if match is not None else _NOOP_ROUTE
                handled, receive = await self._handle(
                    match.group(1) if match is not None else None, scope, receive, send
                )
                if handled:
                    scope["route"] = route
                    self.answered[route].inc()
                    return
        await self.app(scope, receive, send)

    def _version(self, query: bytes) -> tuple[bool, int | None]:
        """(whether the query is one this path reads, the pinned version)."""
        if not query:
            return True, None
        match = _VERSION.fullmatch(query)
        if match is None or int(match.group(1)) > INT32_MAX:
            return False, None
        return True, int(match.group(1))

    async def _handle(
        self, name: str | None, scope: Scope, receive: Receive, send: Send
    ) -> tuple[bool, Receive]:
        headers = dict(scope["headers"])
        readable, version = self._version(scope.get("query_string", b""))
        declared = headers.get(b"content-length", b"")
        if (
            not readable
            or not declared.isdigit()
            or int(declared) > self.max_body
            or cached_device(self.context, headers) is None
        ):
            return False, receive
        try:
            request_type = codec.media_type(headers.get(b"content-type", b"").decode("latin-1"))
            response_type = codec.response_type(
                headers.get(b"accept", b"").decode("latin-1") or None, request_type
            )
        except TandemError:
            return False, receive  # the full path words the 415 or 406
        body, messages = await read_body(receive, int(declared))
        if body is None:
            return False, replay(messages, receive)
        if name is None:
            await respond(send, 200, b"{}", b"application/json", [])
            return True, receive
        try:
            result = await answer(
                self.pool,
                name,
                version,
                body,
                request_type=request_type,
                response_type=response_type,
                max_body_bytes=self.max_body,
            )
        except TandemError as exc:
            await tandem_error_response(exc)(scope, receive, send)
            return True, receive
        except Exception:
            # The same envelope the full app's last-resort handler sends, and logged alike.
            request_id = scope.get("state", {}).get("request_id", "?")
            log.exception("unhandled error", extra={"request_id": request_id})
            await error_response(
                500,
                "internal_error",
                f"An unexpected error happened (request id {request_id}); it was logged. "
                "Retry, and report the request id if it persists.",
            )(scope, receive, send)
            return True, receive
        await respond(send, 200, result.body, result.media_type.encode(), list(result.raw_headers))
        return True, receive
