"""Uploads over HTTP: devices send outbox batches; admins list what was stored."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request
from starlette.concurrency import run_in_threadpool

from cloud.core.deps import Admin, Context, CurrentDevice, ReadSession
from cloud.core.errors import PayloadTooLarge
from cloud.uploads import service
from cloud.uploads.schemas import StoredUpload, UploadPage
from device_sdk.wire import (
    MAX_UPLOAD_BODY_BYTES,
    ONE_LINE_PATTERN,
    UploadAccepted,
    UploadBatch,
    UploadChannel,
)

router = APIRouter(tags=["uploads"])


async def _bounded_body(request: Request) -> None:
    # FastAPI has read the body already (it is cached); this refuses it before validation
    # turns megabytes of JSON into Python objects.
    size = len(await request.body())
    if size > MAX_UPLOAD_BODY_BYTES:
        raise PayloadTooLarge(
            f"An upload body may have at most {MAX_UPLOAD_BODY_BYTES} bytes; this one has "
            f"{size}. Send fewer items per request."
        )


@router.post("/v1/devices/me/uploads/{channel}", dependencies=[Depends(_bounded_body)])
async def upload(
    channel: UploadChannel, body: UploadBatch, device: CurrentDevice, context: Context
) -> UploadAccepted:
    """Store a batch of outbox items from the calling device: up to 500 items, each a
    `key` (a lowercase UUID the device chose) and a JSON-object `payload` of at most 64 KiB
    as compact JSON. Each (device, key) is stored once: `accepted` counts the new items,
    `duplicates` those stored before, so a batch retried after a lost response is never
    counted twice. The answer comes after the commit; a 2xx means every item is stored."""

    def write() -> UploadAccepted:
        with context.db.session() as session:
            return service.store(session, device.seq, channel, body.items)

    return await run_in_threadpool(write)


@router.get("/v1/uploads/{channel}")
def list_uploads(
    channel: UploadChannel,
    _admin: Admin,
    session: ReadSession,
    device_id: Annotated[str | None, Query(max_length=64, pattern=ONE_LINE_PATTERN)] = None,
    limit: Annotated[int, Query(ge=1, le=service.MAX_PAGE)] = 100,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
) -> UploadPage:
    """List a channel's stored items in the order they arrived, of one device if
    `device_id` is given. Pass `next_cursor` back as `cursor` for the next page; it is null
    on the last page."""
    rows, next_cursor = service.list_page(
        session, channel, device_id=device_id, limit=limit, cursor=cursor
    )
    return UploadPage(
        items=[
            StoredUpload(
                key=row.key,
                device_id=owner,
                channel=UploadChannel(row.channel),
                payload=row.payload,
                received_at=row.received_at,
            )
            for row, owner in rows
        ],
        next_cursor=next_cursor,
    )
