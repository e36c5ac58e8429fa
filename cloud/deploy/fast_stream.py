"""A cached device's event stream, answered below the framework.

A release sends a nudge down thousands of open streams at once. Through Starlette's
``StreamingResponse`` each nudge crosses four ``send`` wrappers and a task group, and the
route polls the connection for a disconnect before every event; in release profiles that
was a sixth of the server's time. This stream writes the same frames straight to the
server (``tests/e2e/test_device_stream.py`` runs against it), and notices a client that
went away from a watcher on ``receive`` instead of polling.

Only devices whose token is cached come here (see ``cloud/core/raw_asgi.py``); the full
route in ``device_routes.py`` authenticates the rest, and answers a removed device.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi.responses import StreamingResponse
from starlette.types import Receive, Send

from cloud.auth.principal import DevicePrincipal
from cloud.core.context import CloudContext
from cloud.core.sse import SSE_HEADERS, frame, relay
from cloud.deploy.device_routes import render_nudge
from cloud.deploy.nudges import CLOSE, device_channel
from device_sdk.wire import Nudge

# What StreamingResponse sends for the full route, computed once.
_START_HEADERS: list[tuple[bytes, bytes]] = StreamingResponse(
    iter(()), media_type="text/event-stream", headers=SSE_HEADERS
).raw_headers


async def _watch(receive: Receive, gone: asyncio.Event) -> None:
    """Read the request until the client disconnects (a GET has no body to wait for)."""
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            gone.set()
            return


async def serve_stream(
    context: CloudContext,
    device: DevicePrincipal,
    token_hash: str,
    headers: dict[bytes, bytes],
    current_rev: Callable[[int], Awaitable[int | None]],
    receive: Receive,
    send: Send,
) -> bool:
    """Stream ``device``'s desired-state events; False (nothing sent) if it was removed."""
    subscription = context.broker.subscribe(device_channel(device.device_id))
    # Subscribe before reading the revision: a change in between is then not missed.
    await subscription.__aenter__()
    try:
        rev = await current_rev(device.seq)
    except BaseException:
        await subscription.__aexit__(None, None, None)
        raise
    if rev is None:
        await subscription.__aexit__(None, None, None)
        return False
    gone = asyncio.Event()
    watcher = asyncio.ensure_future(_watch(receive, gone))

    async def is_disconnected() -> bool:
        return gone.is_set()

    streams = context.metrics.device_streams
    streams.inc()
    context.online.opened(token_hash, device)
    try:
        await send({"type": "http.response.start", "status": 200, "headers": _START_HEADERS})
        if headers.get(b"last-event-id", b"").decode("latin-1") != str(rev):
            first = frame(
                Nudge(desired_rev=rev).model_dump_json(), event="desired", event_id=str(rev)
            )
            await _chunk(send, first)
        async for chunk in relay(
            subscription,
            render_nudge,
            heartbeat_s=context.settings.stream_heartbeat_s,
            is_disconnected=is_disconnected,
            ends=lambda message: message.data == CLOSE,
        ):
            if gone.is_set():
                break
            await _chunk(send, chunk)
        if not gone.is_set():
            await send({"type": "http.response.body", "body": b"", "more_body": False})
    except OSError:
        pass  # the client went away mid-write
    finally:
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await watcher
        streams.dec()
        context.online.closed(device.seq)
        await subscription.__aexit__(None, None, None)
    return True


async def _chunk(send: Send, body: bytes) -> None:
    message: dict[str, Any] = {"type": "http.response.body", "body": body, "more_body": True}
    await send(message)
