"""A live feed of platform events for operators and dashboards."""

from __future__ import annotations

from collections.abc import AsyncIterator

from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse

from cloud.core.broker import Message
from cloud.core.deps import Admin, Context
from cloud.core.sse import SSE_HEADERS, frame, relay
from cloud.events.publisher import EVENTS_CHANNEL

router = APIRouter(prefix="/v1/events", tags=["events"])
HEARTBEAT_S = 15.0


def _render(message: Message) -> bytes:
    return frame(message.data.decode("utf-8", "replace"), event="platform")


@router.get("", response_class=StreamingResponse)
async def event_stream(request: Request, _admin: Admin, context: Context) -> StreamingResponse:
    """Server-Sent Events: one `platform` event per change (device registered, model registered,
    ...), from whichever replica made it, with a heartbeat comment every 15 s."""
    subscription = context.broker.subscribe(EVENTS_CHANNEL)
    await subscription.__aenter__()

    async def body() -> AsyncIterator[bytes]:
        try:
            async for chunk in relay(
                subscription,
                _render,
                heartbeat_s=HEARTBEAT_S,
                is_disconnected=request.is_disconnected,
            ):
                yield chunk
        finally:
            await subscription.__aexit__(None, None, None)

    return StreamingResponse(body(), media_type="text/event-stream", headers=SSE_HEADERS)
