"""Admin-facing payloads for stored uploads; device-facing ones live in device_sdk.wire."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel

from device_sdk.wire import UploadChannel


class StoredUpload(BaseModel):
    """One stored item: who sent it, under which idempotency key, and when it arrived."""

    key: str
    device_id: str
    channel: UploadChannel
    payload: dict[str, Any]
    received_at: datetime


class UploadPage(BaseModel):
    items: list[StoredUpload]
    next_cursor: str | None
