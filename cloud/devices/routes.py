"""Device registration, a device's view of itself, and the admin's fleet listing."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, Response, status
from starlette.concurrency import run_in_threadpool

from cloud.auth.cache import revoke
from cloud.core.deps import Admin, Context, CurrentDevice, ReadSession
from cloud.deploy.materialize import Changed, lock_live_tasks, materialize_device
from cloud.deploy.nudges import close_device_stream, send_nudges
from cloud.devices import service
from cloud.devices.schemas import DevicePage
from cloud.events.publisher import publish_event_from_thread
from device_sdk.wire import (
    ONE_LINE_PATTERN,
    DeviceAttributes,
    DeviceInfo,
    RegisterDeviceRequest,
    RegisterDeviceResponse,
    Tag,
)

router = APIRouter(prefix="/v1/devices", tags=["devices"])
# Refused before any query: PostgreSQL cannot bind a NUL in text (a 500 otherwise).
DeviceIdPath = Annotated[str, Path(max_length=64, pattern=ONE_LINE_PATTERN)]


@router.post("", status_code=status.HTTP_201_CREATED)
def register_device(body: RegisterDeviceRequest, context: Context) -> RegisterDeviceResponse:
    """Register a device with an enrollment key. The returned `token` is the device's bearer
    credential from now on; it is shown once and the cloud keeps only its hash."""
    with context.db.session() as session:
        lock_live_tasks(session)
        registered = service.register(
            session,
            body.enrollment_key,
            body.attributes,
            public_key=context.platform_key.public_key_b64,
        )
        # Deployments released before this device existed reach it at once.
        materialize_device(session, service.get(session, registered.device_id).seq)
    publish_event_from_thread(
        context.broker, "device.registered", {"device_id": registered.device_id}
    )
    return registered


@router.get("")
def list_devices(
    _admin: Admin,
    session: ReadSession,
    platform: Annotated[str | None, Query(max_length=32, pattern=ONE_LINE_PATTERN)] = None,
    os_version: Annotated[str | None, Query(max_length=32, pattern=ONE_LINE_PATTERN)] = None,
    app_version: Annotated[str | None, Query(max_length=32, pattern=ONE_LINE_PATTERN)] = None,
    model: Annotated[str | None, Query(max_length=64, pattern=ONE_LINE_PATTERN)] = None,
    region: Annotated[str | None, Query(max_length=32, pattern=ONE_LINE_PATTERN)] = None,
    tag: Annotated[
        list[Tag] | None, Query(max_length=64, description="Repeat to require several tags.")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=service.MAX_PAGE)] = 100,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
) -> DevicePage:
    """List devices in registration order, filtered by exact attribute values and tags.
    Pass `next_cursor` back as `cursor` for the next page; it is null on the last page."""
    filters = service.DeviceFilter(
        platform=platform,
        os_version=os_version,
        app_version=app_version,
        model=model,
        region=region,
        tags=tag or [],
    )
    rows, next_cursor = service.list_page(session, filters, limit=limit, cursor=cursor)
    return DevicePage(items=[service.to_info(r) for r in rows], next_cursor=next_cursor)


@router.get("/me")
def read_me(device: CurrentDevice, session: ReadSession) -> DeviceInfo:
    """The calling device's own record. A device can read only itself."""
    return service.to_info(service.get_by_seq(session, device.seq))


@router.put("/me/attributes")
async def update_my_attributes(
    body: DeviceAttributes, device: CurrentDevice, context: Context
) -> DeviceInfo:
    """Replace the calling device's attributes, e.g. after an app update changes app_version.
    Deployments targeting the new attributes apply at once (the device is nudged)."""

    def update() -> tuple[DeviceInfo, Changed | None]:
        with context.db.session() as session:
            lock_live_tasks(session)
            row = service.update_attributes(session, device.seq, body)
            return service.to_info(row), materialize_device(session, row.seq)

    info, changed = await run_in_threadpool(update)
    if changed is not None:
        await send_nudges(context.broker, [changed])
    return info


@router.get("/{device_id}")
def read_device(device_id: DeviceIdPath, _admin: Admin, session: ReadSession) -> DeviceInfo:
    """One device, by id."""
    return service.to_info(service.get(session, device_id))


@router.delete("/{device_id}", status_code=status.HTTP_204_NO_CONTENT)
async def remove_device(device_id: DeviceIdPath, _admin: Admin, context: Context) -> Response:
    """Remove a device; its token stops working at once, on every replica, and its open
    event stream is closed."""

    def remove() -> str:
        with context.db.session() as session:
            return service.remove(session, device_id)

    token_hash = await run_in_threadpool(remove)
    await revoke(context.broker, context.auth_cache, token_hash)
    await close_device_stream(context.broker, device_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
