"""Device registration, a device's view of itself, and the admin's fleet listing."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Response, status

from cloud.core.deps import Admin, Context, CurrentDevice, DbSession
from cloud.devices import service
from cloud.devices.schemas import DevicePage
from cloud.events.publisher import publish_event_from_thread
from device_sdk.wire import (
    DeviceAttributes,
    DeviceInfo,
    RegisterDeviceRequest,
    RegisterDeviceResponse,
)

router = APIRouter(prefix="/v1/devices", tags=["devices"])


@router.post("", status_code=status.HTTP_201_CREATED)
def register_device(body: RegisterDeviceRequest, context: Context) -> RegisterDeviceResponse:
    """Register a device with an enrollment key. The returned `token` is the device's bearer
    credential from now on; it is shown once and the cloud keeps only its hash."""
    with context.db.session() as session:
        registered = service.register(session, body.enrollment_key, body.attributes)
    publish_event_from_thread(
        context.broker, "device.registered", {"device_id": registered.device_id}
    )
    return registered


@router.get("")
def list_devices(
    _admin: Admin,
    session: DbSession,
    platform: Annotated[str | None, Query(max_length=32)] = None,
    os_version: Annotated[str | None, Query(max_length=32)] = None,
    app_version: Annotated[str | None, Query(max_length=32)] = None,
    model: Annotated[str | None, Query(max_length=64)] = None,
    region: Annotated[str | None, Query(max_length=32)] = None,
    tag: Annotated[
        list[str] | None, Query(max_length=64, description="Repeat to require several tags.")
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
def read_me(device: CurrentDevice, session: DbSession) -> DeviceInfo:
    """The calling device's own record. A device can read only itself."""
    return service.to_info(service.get_by_seq(session, device.seq))


@router.put("/me/attributes")
def update_my_attributes(
    body: DeviceAttributes, device: CurrentDevice, session: DbSession
) -> DeviceInfo:
    """Replace the calling device's attributes, e.g. after an app update changes app_version."""
    return service.to_info(service.update_attributes(session, device.seq, body))


@router.get("/{device_id}")
def read_device(device_id: str, _admin: Admin, session: DbSession) -> DeviceInfo:
    """One device, by id."""
    return service.to_info(service.get(session, device_id))


@router.delete("/{device_id}", status_code=status.HTTP_204_NO_CONTENT)
def remove_device(device_id: str, _admin: Admin, session: DbSession) -> Response:
    """Remove a device; its token stops working at once."""
    service.remove(session, device_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
