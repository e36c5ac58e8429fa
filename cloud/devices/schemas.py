"""Admin-facing payloads for the device list; device-facing ones live in device_sdk.wire."""

from __future__ import annotations

from pydantic import BaseModel

from device_sdk.wire import DeviceInfo


class DevicePage(BaseModel):
    items: list[DeviceInfo]
    next_cursor: str | None
