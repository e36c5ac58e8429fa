"""Admin-facing payloads for enrollment keys."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, Strict, StringConstraints

from cloud.core.db import INT32_MAX

KeyName = Annotated[
    str, StringConstraints(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
]


class CreateEnrollmentKey(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: KeyName | None = Field(
        default=None, description="Unique label; generated when omitted.", examples=["android-beta"]
    )
    # Strict: lax mode would read `true` as 1 and "5" as 5; a JSON integer is asked for.
    expires_in_s: Annotated[int, Strict(), Field(gt=0, le=10 * 365 * 86400)] | None = Field(
        default=None, description="Seconds until the key stops enrolling devices."
    )
    max_devices: Annotated[int, Strict(), Field(gt=0, le=INT32_MAX)] | None = Field(
        default=None, description="How many devices the key may enroll."
    )


class EnrollmentKeyOut(BaseModel):
    id: int
    name: str
    created_at: datetime
    expires_at: datetime | None
    max_devices: int | None
    devices_enrolled: int
    revoked: bool


class CreatedEnrollmentKey(EnrollmentKeyOut):
    key: str = Field(description="The secret; shown once, stored only as a hash.")


class EnrollmentKeyList(BaseModel):
    items: list[EnrollmentKeyOut]
