"""The device's side of push-then-pull: its desired state, its event stream, its reports."""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator

from fastapi import APIRouter, Request, Response
from fastapi.responses import StreamingResponse
from starlette.concurrency import run_in_threadpool

from cloud.core.broker import Message
from cloud.core.deps import Context, CurrentDevice, bearer_token
from cloud.core.secrets import hash_token
from cloud.core.sse import SSE_HEADERS, frame, relay
from cloud.deploy import desired
from cloud.deploy.nudges import CLOSE, device_channel
from cloud.deploy.rollout import apply_gates
from cloud.deploy.schemas import StatusAccepted
from cloud.deploy.status_writer import StatusWriter
from device_sdk.wire import DesiredState, Nudge, StatusReports

router = APIRouter(prefix="/v1/devices/me", tags=["device sync"])


def _desired(context: Context, seq: int, if_none_match: str) -> tuple[str, bytes | None]:
    """The ETag, and the body unless the client's copy is current (one transaction)."""
    with context.db.session(write=False) as session:
        tag = desired.etag(desired.current_rev(session, seq))
        if tag in if_none_match:
            return tag, None
        return tag, desired.desired_state_json(session, seq)


@router.get("/desired", response_model=DesiredState, responses={304: {"description": "Unchanged."}})
async def read_desired(request: Request, device: CurrentDevice, context: Context) -> Response:
    """The calling device's desired state: for each task, the version to run, its bundle's
    digest, and the signed manifest. The ETag is the state's revision; send it back in
    `If-None-Match` to get 304 when nothing changed."""
    tag, body = await run_in_threadpool(
        _desired, context, device.seq, request.headers.get("if-none-match", "")
    )
    headers = {"ETag": tag, "Cache-Control": "no-cache"}
    if body is None:
        return Response(status_code=304, headers=headers)
    return Response(body, media_type="application/json", headers=headers)


@router.post("/status")
async def report_status(
    request: Request, body: StatusReports, device: CurrentDevice, context: Context
) -> StatusAccepted:
    """Report what happened to tasks on this device: `downloaded`, `active`, `failed`
    (with a `reason`) or `rolled_back`. Several reports may share one request; the last
    one for a task is its state. Reports feed the deployments' gates."""
    writer: StatusWriter = request.app.state.status_writer
    gated = await writer.submit(device, list(body.reports))
    if gated:
        await apply_gates(context, sorted(gated))
    return StatusAccepted(accepted=len(body.reports))


def render_nudge(message: Message) -> bytes | None:
    """The SSE frame of a nudge from the broker; None for a message that is not one."""
    return _nudge_frame(message.data)


@functools.lru_cache(maxsize=4096)
def _nudge_frame(data: bytes) -> bytes | None:
    # A release sends thousands of devices the same few revisions: render each once.
    try:
        nudge = Nudge.model_validate_json(data)
    except ValueError:
        return None
    return frame(nudge.model_dump_json(), event="desired", event_id=str(nudge.desired_rev))


def _rev(context: Context, seq: int) -> int:
    with context.db.session(write=False) as session:
        return desired.current_rev(session, seq)


@router.get("/stream", response_class=StreamingResponse)
async def event_stream(
    request: Request, device: CurrentDevice, context: Context
) -> StreamingResponse:
    """Server-Sent Events for this device: `desired` events (`id` = the desired state's
    revision, data `{"desired_rev": n}`) whenever the desired state changes, one at once if
    `Last-Event-ID` is not the current revision, and heartbeat comments when idle."""
    subscription = context.broker.subscribe(device_channel(device.device_id))
    # Subscribe before reading the revision: a change in between is then not missed.
    await subscription.__aenter__()
    try:
        rev = await run_in_threadpool(_rev, context, device.seq)
    except BaseException:
        await subscription.__aexit__(None, None, None)
        raise
    caught_up = request.headers.get("last-event-id") == str(rev)
    streams = context.metrics.device_streams
    token_hash = hash_token(bearer_token(request))

    async def body() -> AsyncIterator[bytes]:
        streams.inc()
        context.online.opened(token_hash, device)
        try:
            if not caught_up:
                yield frame(
                    Nudge(desired_rev=rev).model_dump_json(), event="desired", event_id=str(rev)
                )
            async for chunk in relay(
                subscription,
                render_nudge,
                heartbeat_s=context.settings.stream_heartbeat_s,
                is_disconnected=request.is_disconnected,
                ends=lambda message: message.data == CLOSE,
            ):
                yield chunk
        finally:
            streams.dec()
            context.online.closed(device.seq)
            await subscription.__aexit__(None, None, None)

    return StreamingResponse(body(), media_type="text/event-stream", headers=SSE_HEADERS)
