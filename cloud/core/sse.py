"""Server-Sent Events framing and a stream that interleaves broker messages with heartbeats."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable

from cloud.core.broker import Message, Subscription

SSE_HEADERS = {
    "Cache-Control": "no-store",
    "X-Accel-Buffering": "no",  # tell nginx not to buffer the stream
    "Connection": "keep-alive",
}


def frame(data: str, *, event: str | None = None, event_id: str | None = None) -> bytes:
    lines = []
    if event_id is not None:
        lines.append(f"id: {event_id}")
    if event is not None:
        lines.append(f"event: {event}")
    lines.extend(f"data: {line}" for line in data.splitlines() or [""])
    return ("\n".join(lines) + "\n\n").encode()


def comment(text: str) -> bytes:
    return f": {text}\n\n".encode()


async def relay(
    subscription: Subscription,
    render: Callable[[Message], bytes | None],
    *,
    heartbeat_s: float,
    is_disconnected: Callable[[], Awaitable[bool]],
    retry_ms: int = 3000,
    ends: Callable[[Message], bool] | None = None,
) -> AsyncIterator[bytes]:
    """Yield rendered broker messages as they arrive, and a heartbeat comment when idle.

    ``subscription`` must already be entered, so nothing published after the stream opened
    is missed. A message for which ``ends`` is true closes the stream. The heartbeat keeps
    proxies from closing an idle connection and lets the client notice a dead one.
    """
    yield f"retry: {retry_ms}\n\n".encode()
    messages = aiter(subscription)
    pending: asyncio.Task[Message] | None = None
    try:
        while True:
            if pending is None:
                pending = asyncio.ensure_future(anext(messages))
            done, _ = await asyncio.wait({pending}, timeout=heartbeat_s)
            if not done:
                # Asked only when idle: a gone client also fails the next send, and asking
                # on every message cost a release of thousands of nudges a receive each.
                if await is_disconnected():
                    return
                yield comment("heartbeat")
                continue
            try:
                message = pending.result()
            except StopAsyncIteration:
                return
            finally:
                pending = None
            if ends is not None and ends(message):
                return
            rendered = render(message)
            if rendered is not None:
                yield rendered
    finally:
        if pending is not None:
            pending.cancel()
            with contextlib.suppress(asyncio.CancelledError, StopAsyncIteration):
                await pending
