"""Refuse request bodies above the configured size, before and while they stream in.

``Content-Length`` above the limit is answered at once. A body without one (chunked) is
counted as it arrives; once it passes the limit, whatever the app was about to answer is
replaced by the same 413, so a lying client gets the same clear error as an honest one.
"""

from __future__ import annotations

import contextlib
import json

from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from cloud.core.errors import PayloadTooLarge


async def read_within(request: Request, limit: int, too_large: PayloadTooLarge) -> bytes:
    """The whole body of a route with its own, smaller limit: ``too_large`` is raised as
    soon as the declared length or the bytes streamed so far pass ``limit``."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise too_large
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise too_large
        chunks.append(chunk)
    return b"".join(chunks)


class BodyTooLarge(Exception):
    """Raised inside the app's receive() when the streamed body passes the limit."""


def _too_large_body(limit: int) -> bytes:
    message = (
        f"The request body exceeds the limit of {limit} bytes ({limit / 2**20:.1f} MiB). "
        "Send a smaller body, or raise TANDEM_MAX_UPLOAD_BYTES on the server."
    )
    return json.dumps({"error": {"code": "payload_too_large", "message": message}}).encode()


class BodyLimitMiddleware:
    def __init__(self, app: ASGIApp, *, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def _refuse(self, send: Send) -> None:
        body = _too_large_body(self.max_bytes)
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"connection", b"close"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None:
            try:
                too_big = int(declared) > self.max_bytes
            except ValueError:
                too_big = False  # the server rejects a malformed Content-Length itself
            if too_big:
                await self._refuse(send)
                return

        received = 0
        exceeded = False
        response_started = False

        async def counting_receive() -> Message:
            nonlocal received, exceeded
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    exceeded = True
                    raise BodyTooLarge
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal response_started
            if exceeded:
                return  # the app's own answer to the broken body is replaced below
            if message["type"] == "http.response.start":
                response_started = True
            await send(message)

        with contextlib.suppress(BodyTooLarge):
            await self.app(scope, counting_receive, guarded_send)
        if exceeded and not response_started:
            await self._refuse(send)
