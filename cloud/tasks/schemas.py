"""Task publishing payloads."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field

from device_sdk.wire import TaskManifest


class TaskVersionOut(BaseModel):
    """A published, immutable task version: its signed manifest and its bundle's digest."""

    name: str
    version: int
    bundle_sha256: str
    bundle_size: int
    manifest: TaskManifest
    signature: str = Field(
        description="base64 Ed25519 signature of the manifest's canonical JSON by the "
        "platform key (the `platform_public_key` devices receive at registration)."
    )
    created_at: datetime
    bundle_url: str


class TaskSummary(BaseModel):
    name: str
    latest_version: int
    versions: int
    updated_at: datetime


class TaskList(BaseModel):
    items: list[TaskSummary]


class TaskDetail(BaseModel):
    name: str
    versions: list[TaskVersionOut]
