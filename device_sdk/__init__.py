"""Tandem device SDK: the library an app embeds to run compact models and sync tasks."""

from __future__ import annotations

from device_sdk.wire import DeviceAttributes, DeviceInfo, RegisterDeviceResponse

__all__ = ["DeviceAttributes", "DeviceInfo", "RegisterDeviceResponse"]
